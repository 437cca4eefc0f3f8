use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, problem, spawn};

#[tokio::test]
async fn signup_login_me_refresh_reuse_logout() {
    let s = spawn().await;
    let t = s.signup().await;

    // Login with the password chosen at sign-up.
    let res = s
        .http
        .post(s.url("/auth/login"))
        .json(&json!({"tenantSlug": t.slug, "email": "ADMIN@acme.test ", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let pair: Value = res.json().await.unwrap();
    assert_eq!(pair["tokenType"], "Bearer");
    assert!(pair["expiresIn"].as_i64().unwrap() <= 900);
    let access = pair["accessToken"].as_str().unwrap();

    // /me shows the user, the tenant and admin permissions.
    let me: Value = s
        .http
        .get(s.url("/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["email"], "admin@acme.test");
    assert_eq!(me["user"]["role"], "admin");
    assert_eq!(me["tenant"]["slug"], t.slug.as_str());
    assert!(
        me["permissions"]["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["objectType"] == "user" && p["action"] == "create" && p["scope"] == "all")
    );

    // Refresh rotates; the old token used again is refused and revokes the new one too.
    let old = pair["refreshToken"].as_str().unwrap().to_owned();
    let res = s
        .http
        .post(s.url("/auth/refresh"))
        .json(&json!({"refreshToken": old}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    let new = rotated["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let res = s
        .http
        .post(s.url("/auth/refresh"))
        .json(&json!({"refreshToken": old}))
        .send()
        .await
        .unwrap();
    problem(res, 401, "UNAUTHENTICATED").await;
    let res = s
        .http
        .post(s.url("/auth/refresh"))
        .json(&json!({"refreshToken": new}))
        .send()
        .await
        .unwrap();
    problem(res, 401, "UNAUTHENTICATED").await;

    // The reuse is a security event the admin can list.
    let events: Value = s
        .get(&t, "/security-events?kind=refresh_token.reused")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");

    // Logout revokes the sign-up session.
    let res = s
        .http
        .post(s.url("/auth/logout"))
        .json(&json!({"refreshToken": t.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s
        .http
        .post(s.url("/auth/refresh"))
        .json(&json!({"refreshToken": t.refresh}))
        .send()
        .await
        .unwrap();
    problem(res, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn wrong_email_and_wrong_password_look_the_same() {
    let s = spawn().await;
    let t = s.signup().await;
    let mut bodies = Vec::new();
    for (email, pw) in [
        ("nobody@acme.test", PASSWORD),
        ("admin@acme.test", "wrong password!!"),
    ] {
        let res = s
            .http
            .post(s.url("/auth/login"))
            .json(&json!({"tenantSlug": t.slug, "email": email, "password": pw}))
            .send()
            .await
            .unwrap();
        let mut b = problem(res, 401, "UNAUTHENTICATED").await;
        b["requestId"] = Value::Null;
        bodies.push(b);
    }
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test]
async fn api_client_gets_a_token_with_client_credentials() {
    let s = spawn().await;
    let t = s.signup().await;
    let res = s
        .post(
            &t,
            "/api-clients",
            json!({"name": "Zapier", "role": "read_only"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let c: Value = res.json().await.unwrap();
    let (id, secret) = (
        c["clientId"].as_str().unwrap(),
        c["clientSecret"].as_str().unwrap(),
    );

    let res = s
        .http
        .post(s.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let tok: Value = res.json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    let me: Value = s
        .http
        .get(s.url("/me"))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], Value::Null);
    assert_eq!(me["permissions"]["role"], "read_only");

    // RFC 6749 errors: a wrong secret is invalid_client, another grant is unsupported.
    let res = s
        .http
        .post(s.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let res = s
        .http
        .post(s.url("/oauth/token"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );

    // Deleted credentials stop working.
    let res = s
        .http
        .delete(s.url(&format!("/api-clients/{}", c["id"].as_str().unwrap())))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s
        .http
        .post(s.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn jwks_docs_and_openapi_are_served() {
    let s = spawn().await;
    let jwks: Value = s
        .http
        .get(format!("{}/.well-known/jwks.json", s.root))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/auth/signup",
        "/api/v1/me",
        "/api/v1/users/{id}",
        "/.well-known/jwks.json",
        "/api/v1/oauth/token",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    let page = s
        .http
        .get(s.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/api/v1/docs/rapidoc-min.js"));
    let js = s
        .http
        .get(s.url("/docs/rapidoc-min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(
        js.bytes().await.unwrap().len() > 100_000,
        "the docs script is vendored, not fetched"
    );
    assert_eq!(
        s.http
            .get(format!("{}/livez", s.root))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.http
            .get(format!("{}/readyz", s.root))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
