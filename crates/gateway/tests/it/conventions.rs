use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{fields, problem, spawn};

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let s = spawn().await;
    let res = s
        .http
        .get(format!("{}/livez", s.root))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = s.http.get(s.url("/me")).send().await.unwrap();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!rid.is_empty());
    let p = problem(res, 401, "UNAUTHENTICATED").await;
    assert_eq!(p["requestId"], rid.as_str());
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_another_body() {
    let s = spawn().await;
    let t = s.signup().await;
    let body = json!({"email": "rep@acme.test", "role": "sales_rep", "name": "Rep"});
    let first = s
        .post(&t, "/users", body.clone())
        .header("idempotency-key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = s
        .post(&t, "/users", body.clone())
        .header("idempotency-key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let other = s
        .post(
            &t,
            "/users",
            json!({"email": "other@acme.test", "role": "sales_rep"}),
        )
        .header("idempotency-key", "k-1")
        .send()
        .await
        .unwrap();
    problem(other, 422, "IDEMPOTENCY_KEY_REUSED").await;

    // A replayed error is the first problem document, word for word (its requestId included).
    let bad = json!({"email": "not-an-email", "role": "sales_rep"});
    let e1 = problem(
        s.post(&t, "/users", bad.clone())
            .header("idempotency-key", "k-2")
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    let replay = s
        .post(&t, "/users", bad)
        .header("idempotency-key", "k-2")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), e1);

    // One user was created, not two.
    let users: Value = s
        .get(&t, "/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reps = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["email"] == "rep@acme.test")
        .count();
    assert_eq!(reps, 1);
}

#[tokio::test]
async fn concurrent_duplicates_create_once() {
    let s = spawn().await;
    let t = s.signup().await;
    let body = json!({"email": "dup@acme.test", "role": "sales_rep", "password": "a long enough password"});
    let sends = (0..4).map(|_| {
        s.post(&t, "/users", body.clone())
            .header("idempotency-key", "same")
            .send()
    });
    let results = futures::future::join_all(sends).await;
    let mut created_ids = Vec::new();
    for r in results {
        let r = r.unwrap();
        match r.status() {
            StatusCode::CREATED => created_ids.push(r.json::<Value>().await.unwrap()["id"].clone()),
            StatusCode::CONFLICT => {
                problem(r, 409, "CONFLICT").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!created_ids.is_empty());
    assert!(
        created_ids.iter().all(|id| *id == created_ids[0]),
        "every success is the same user"
    );
    let users: Value = s
        .get(&t, "/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["email"] == "dup@acme.test")
            .count(),
        1
    );
}

#[tokio::test]
async fn etag_and_if_match() {
    let s = spawn().await;
    let t = s.signup().await;
    let res = s
        .get(&t, &format!("/users/{}", t.user_id))
        .send()
        .await
        .unwrap();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let res = s
        .patch(
            &t,
            &format!("/users/{}", t.user_id),
            json!({"name": "Ada L."}),
        )
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let new_etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    // The old version is stale now.
    let res = s
        .patch(&t, &format!("/users/{}", t.user_id), json!({"name": "Ada"}))
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    problem(res, 412, "PRECONDITION_FAILED").await;
    let me: Value = s.get(&t, "/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["name"], "Ada L.");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_never_a_500() {
    let s = spawn().await;
    let t = s.signup().await;
    let post_raw = |body: &'static str, ct: &'static str| {
        s.http
            .post(s.url("/users"))
            .bearer_auth(&t.token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let p = problem(
        post_raw("{\"email\": ", "application/json").await.unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["body"]);
    let p = problem(
        post_raw("{}", "text/plain").await.unwrap(),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    assert_eq!(fields(&p), ["Content-Type"]);
    let p = problem(
        post_raw(
            r#"{"email":"a@b.co","role":"sales_rep","admin":true}"#,
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["admin"]);
    let p = problem(
        post_raw(r#"{"role":"sales_rep"}"#, "application/json")
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["email"]);
    let p = problem(
        post_raw(r#"{"email":"a@b.co","role":7}"#, "application/json")
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["role"]);
    let p = problem(
        post_raw(r#"{"email":"nope","role":"sales_rep"}"#, "application/json")
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["email"]);

    let huge = format!(
        r#"{{"email":"a@b.co","role":"sales_rep","name":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let res = s
        .http
        .post(s.url("/users"))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    problem(res, 413, "PAYLOAD_TOO_LARGE").await;

    for q in ["limit=0", "limit=500", "limit=abc", "limit=-1"] {
        let p = problem(
            s.get(&t, &format!("/users?{q}")).send().await.unwrap(),
            400,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(fields(&p), ["limit"], "{q}");
    }
    let p = problem(
        s.get(&t, "/users?sort=name").send().await.unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["sort"]);
    let p = problem(
        s.get(&t, "/users?cursor=forged.cursor.value")
            .send()
            .await
            .unwrap(),
        400,
        "INVALID_CURSOR",
    )
    .await;
    assert_eq!(fields(&p), ["cursor"]);
    let p = problem(
        s.patch(&t, &format!("/users/{}", t.user_id), json!({}))
            .send()
            .await
            .unwrap(),
        400,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(fields(&p), ["body"]);

    // Nothing of the above was written.
    let users: Value = s
        .get(&t, "/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let s = spawn().await;
    problem(
        s.http.get(s.url("/no-such-thing")).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    let res = s.http.delete(s.url("/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
}

#[tokio::test]
async fn paging_returns_every_user_once() {
    let s = spawn().await;
    let t = s.signup().await;
    for i in 0..6 {
        let res = s
            .post(
                &t,
                "/users",
                json!({"email": format!("u{i}@acme.test"), "role": "read_only"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/users?limit=3&cursor={c}"),
            None => "/users?limit=3".to_owned(),
        };
        let page: Value = s.get(&t, &path).send().await.unwrap().json().await.unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(unique.len(), 7);
}

#[tokio::test]
async fn a_response_with_credentials_is_never_replayed() {
    let s = spawn().await;
    let t = s.signup().await;
    let body = json!({"name": "Zapier", "role": "read_only"});
    let first = s
        .post(&t, "/api-clients", body.clone())
        .header("idempotency-key", "client-1")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = s
        .post(&t, "/api-clients", body)
        .header("idempotency-key", "client-1")
        .send()
        .await
        .unwrap();
    let p = problem(again, 409, "CONFLICT").await;
    assert!(
        p["detail"].as_str().unwrap().contains("already succeeded"),
        "{p}"
    );
    let clients: Value = s
        .get(&t, "/api-clients")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        clients["items"].as_array().unwrap().len(),
        1,
        "created once"
    );
}
