//! Refresh tokens rotate and their reuse revokes the family; access tokens that are forged,
//! tampered with, expired or meant for someone else are refused.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use crm_proto::identity as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde_json::{Value, json};
use tonic::{Code, Request};
use uuid::Uuid;

use crate::helpers::{PASSWORD, SignedUp, TestApp, authed, refused, spawn_app};

fn refresh_request(token: &str) -> pb::RefreshTokenRequest {
    pb::RefreshTokenRequest {
        refresh_token: token.to_owned(),
    }
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_whole_family() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let first = app
        .login(a.slug(), &a.email, PASSWORD)
        .await
        .expect("login");

    let second = c
        .refresh_token(refresh_request(&first.refresh_token))
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .expect("tokens");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    c.get_me(authed(&second.access_token, pb::GetMeRequest {}))
        .await
        .expect("the new access token works");

    refused(
        c.refresh_token(refresh_request(&first.refresh_token)).await,
        Code::Unauthenticated,
    );
    refused(
        c.refresh_token(refresh_request(&second.refresh_token))
            .await,
        Code::Unauthenticated,
    );

    let events = c
        .list_security_events(authed(
            a.token(),
            pb::ListSecurityEventsRequest {
                kind: "refresh_token.reused".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("admin lists security events")
        .into_inner()
        .security_events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject_id, a.user.id);

    // Only the reused family is gone: the sign-up session still rotates.
    c.refresh_token(refresh_request(&a.tokens.refresh_token))
        .await
        .expect("another family is unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_refreshes_with_one_token_let_exactly_one_through() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let (mut one, mut two) = (app.new_client().await, app.new_client().await);
    let (r1, r2) = tokio::join!(
        one.refresh_token(refresh_request(&a.tokens.refresh_token)),
        two.refresh_token(refresh_request(&a.tokens.refresh_token)),
    );
    let outcomes = [&r1, &r2].map(|r| r.as_ref().map(|_| ()).map_err(|s| s.code()));
    assert!(
        outcomes == [Ok(()), Err(Code::Unauthenticated)]
            || outcomes == [Err(Code::Unauthenticated), Ok(())],
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let session = app
        .login(a.slug(), &a.email, PASSWORD)
        .await
        .expect("login");
    c.logout(pb::LogoutRequest {
        refresh_token: session.refresh_token.clone(),
    })
    .await
    .expect("logout");
    refused(
        c.refresh_token(refresh_request(&session.refresh_token))
            .await,
        Code::Unauthenticated,
    );
    c.refresh_token(refresh_request(&a.tokens.refresh_token))
        .await
        .expect("the other session is still alive");
}

/// Claims the service would put in a token for `t`'s admin.
fn claims(t: &SignedUp) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": "crm-identity",
        "sub": t.user.id,
        "aud": "crm-api",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": Uuid::now_v7().to_string(),
        "tid": t.tenant.id,
        "roles": ["admin"],
        "teams": [],
    })
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut h = Header::new(alg);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    h
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign token")
}

/// A new Ed25519 key the service has never seen, as PKCS#8 DER.
fn foreign_key() -> EncodingKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    EncodingKey::from_ed_der(&der)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

async fn get_me(app: &TestApp, token: Option<&str>) -> Result<pb::GetMeResponse, tonic::Status> {
    let req = match token {
        Some(t) => authed(t, pb::GetMeRequest {}),
        None => Request::new(pb::GetMeRequest {}),
    };
    app.client().get_me(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn forged_tampered_expired_and_misdirected_access_tokens_are_refused() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let jwks = app
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner()
        .keys;
    let server = app.signing_key().await;
    let published = jwks
        .iter()
        .find(|k| k.kid == server.kid)
        .expect("the signing key is published");
    let kid = server.kid.clone();
    let ed = header(Algorithm::EdDSA, &kid);

    // Control: a token built here with the server's key and the right claims is accepted.
    let good = sign(&ed, &claims(&a), &server.key);
    let me = get_me(&app, Some(&good))
        .await
        .expect("a well-formed token is accepted");
    assert_eq!(me.user.expect("user").id, a.user.id);
    get_me(&app, Some(a.token()))
        .await
        .expect("the sign-up token is accepted");

    let now = Utc::now().timestamp();
    let with = |patch: Value| {
        let mut c = claims(&a);
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let public_key = URL_SAFE_NO_PAD
        .decode(&published.x)
        .expect("x is base64url");
    let (good_header, good_sig) = {
        let mut parts = good.split('.');
        let h = parts.next().expect("header").to_owned();
        parts.next();
        (h, parts.next().expect("signature").to_owned())
    };
    let mut other_tenant = claims(&a);
    other_tenant["tid"] = json!(Uuid::now_v7().to_string());

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a jwt", Some("not-a-jwt".into())),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                b64(&claims(&a))
            )),
        ),
        (
            "HS256 keyed with the public key",
            Some(sign(
                &header(Algorithm::HS256, &kid),
                &claims(&a),
                &EncodingKey::from_secret(&public_key),
            )),
        ),
        (
            "wrong typ",
            Some(sign(
                &Header {
                    typ: Some("JWT".into()),
                    ..ed.clone()
                },
                &claims(&a),
                &server.key,
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                &ed,
                &with(json!({"aud": "someone-else"})),
                &server.key,
            )),
        ),
        (
            "wrong issuer",
            Some(sign(&ed, &with(json!({"iss": "evil-issuer"})), &server.key)),
        ),
        (
            "expired beyond the leeway",
            Some(sign(
                &ed,
                &with(json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000})),
                &server.key,
            )),
        ),
        (
            "not yet valid",
            Some(sign(&ed, &with(json!({"nbf": now + 600})), &server.key)),
        ),
        (
            "unknown kid",
            Some(sign(
                &header(Algorithm::EdDSA, &format!("unknown-{}", Uuid::new_v4())),
                &claims(&a),
                &foreign_key(),
            )),
        ),
        (
            "known kid, foreign key",
            Some(sign(&ed, &claims(&a), &foreign_key())),
        ),
        (
            "tampered payload",
            Some(format!("{good_header}.{}.{good_sig}", b64(&other_tenant))),
        ),
        (
            "signed for a user that does not exist",
            Some(sign(
                &ed,
                &with(json!({"sub": Uuid::now_v7().to_string()})),
                &server.key,
            )),
        ),
    ];
    for (what, token) in cases {
        match get_me(&app, token.as_deref()).await {
            Ok(me) => panic!("{what}: accepted as {me:?}"),
            Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}"),
        }
    }
}

/// The key ids identity publishes.
async fn published_kids(app: &TestApp) -> Vec<String> {
    app.client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect()
}

#[tokio::test]
async fn a_rotation_publishes_the_new_key_and_keeps_the_previous_one() {
    use secrecy::ExposeSecret;
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let before = published_kids(&app).await;
    assert_eq!(before.len(), 1);

    let keys = crm_identity::keys::KeyStore::new(
        app.db.clone(),
        secrecy::SecretBox::new(Box::new(*app.config.key_encryption_key.expose_secret())),
    );
    let second = keys.rotate().await.unwrap();
    let after = published_kids(&app).await;
    assert_eq!(after.len(), 2, "current and previous are published");
    assert!(after.contains(&second) && after.contains(&before[0]));
    // A token signed before the rotation still works.
    app.client()
        .get_me(authed(a.token(), pb::GetMeRequest {}))
        .await
        .unwrap();

    let third = keys.rotate().await.unwrap();
    let last = published_kids(&app).await;
    assert_eq!(last.len(), 2);
    assert!(last.contains(&third) && last.contains(&second));
    assert!(!last.contains(&before[0]), "the oldest key is retired");
}
