//! Inbound webhooks: verified before parsing, stale timestamps refused, repeats dropped;
//! web-to-lead sources publish `lead.submitted`, generic ones `inbound.received`.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Options, TestStack, fields, problem, spawn, spawn_with};

fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = STANDARD.decode(&secret["whsec_".len()..]).expect("base64");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

async fn send(
    app: &TestStack,
    source: &str,
    id: &str,
    ts: i64,
    sig: &str,
    body: &[u8],
) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/inbound/{source}")))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .expect("inbound")
}

async fn published(app: &TestStack, event_type: &str) -> Vec<Value> {
    let db = Database::connect(&app.admin_url).await.expect("admin db");
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT payload FROM webhooks.outbox WHERE event_type = $1",
            [event_type.into()],
        ))
        .await
        .expect("outbox");
    let out = rows
        .iter()
        .map(|r| r.try_get::<Value>("", "payload").expect("payload"))
        .collect();
    let _ = db.close().await;
    out
}

#[tokio::test]
async fn inbound_webhooks_are_verified_before_anything_else() {
    let app = spawn().await;
    let t = app.signup().await;
    let res = app
        .post(
            &t,
            "/webhooks/inbound-sources",
            json!({"name": "Website form", "kind": "web_to_lead"}),
        )
        .send()
        .await
        .expect("create source");
    assert_eq!(res.status().as_u16(), 201);
    let b: Value = res.json().await.expect("json");
    let source = b["id"].as_str().expect("id").to_owned();
    let secret = b["secret"].as_str().expect("secret").to_owned();
    let now = chrono::Utc::now().timestamp();
    let body =
        br#"{"firstName":"Lea","lastName":"Lead","email":"lea@example.com","company":"Leads Ltd"}"#;

    // No bearer token: the signature is the credential.
    let res = send(
        &app,
        &source,
        "msg_1",
        now,
        &sign(&secret, "msg_1", now, body),
        body,
    )
    .await;
    assert_eq!(res.status().as_u16(), 202);
    assert_eq!(res.json::<Value>().await.expect("json")["duplicate"], false);
    let res = send(
        &app,
        &source,
        "msg_1",
        now,
        &sign(&secret, "msg_1", now, body),
        body,
    )
    .await;
    assert_eq!(
        res.json::<Value>().await.expect("json")["duplicate"],
        true,
        "a repeat is dropped"
    );
    let leads = published(&app, "lead.submitted").await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["data"]["after"]["lead"]["lastName"], "Lead");
    assert_eq!(leads[0]["data"]["after"]["sourceId"], source.as_str());

    let tampered =
        br#"{"firstName":"Eve","lastName":"Lead","email":"lea@example.com","company":"Leads Ltd"}"#;
    let sig = sign(&secret, "msg_2", now, body);
    problem(
        send(&app, &source, "msg_2", now, &sig, tampered).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    let stale = now - 600;
    problem(
        send(
            &app,
            &source,
            "msg_3",
            stale,
            &sign(&secret, "msg_3", stale, body),
            body,
        )
        .await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    let ahead = now + 600;
    problem(
        send(
            &app,
            &source,
            "msg_4",
            ahead,
            &sign(&secret, "msg_4", ahead, body),
            body,
        )
        .await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    problem(
        send(
            &app,
            &source,
            "msg_5",
            now,
            &sign(other, "msg_5", now, body),
            body,
        )
        .await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    // Signed but not a lead: refused naming the field, after verification.
    let no_name = br#"{"email":"x@example.com"}"#;
    let res = send(
        &app,
        &source,
        "msg_6",
        now,
        &sign(&secret, "msg_6", now, no_name),
        no_name,
    )
    .await;
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["lastName"]
    );
    let unknown = uuid::Uuid::now_v7();
    problem(
        send(
            &app,
            &unknown.to_string(),
            "msg_7",
            now,
            &sign(&secret, "msg_7", now, body),
            body,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        published(&app, "lead.submitted").await.len(),
        1,
        "nothing refused was published"
    );

    // A generic source publishes what it receives.
    let res = app
        .post(
            &t,
            "/webhooks/inbound-sources",
            json!({"name": "Billing", "kind": "generic"}),
        )
        .send()
        .await
        .expect("create source");
    let b: Value = res.json().await.expect("json");
    let (generic, gsecret) = (
        b["id"].as_str().expect("id").to_owned(),
        b["secret"].as_str().expect("secret").to_owned(),
    );
    let body = br#"{"invoice":42}"#;
    let res = send(
        &app,
        &generic,
        "inv_42",
        now,
        &sign(&gsecret, "inv_42", now, body),
        body,
    )
    .await;
    assert_eq!(res.status().as_u16(), 202);
    let received = published(&app, "inbound.received").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["data"]["after"]["payload"]["invoice"], 42);

    let list: Value = app
        .get(&t, "/webhooks/inbound-sources")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().expect("items").len(), 2);
    assert!(list["items"][0].get("secret").is_none());
}

async fn create_source(app: &TestStack, t: &crate::helpers::Tenant) -> (String, String) {
    let res = app
        .post(
            t,
            "/webhooks/inbound-sources",
            json!({"name": "Partner feed", "kind": "generic"}),
        )
        .send()
        .await
        .expect("create source");
    assert_eq!(res.status().as_u16(), 201);
    let b: Value = res.json().await.expect("json");
    (
        b["id"].as_str().expect("id").to_owned(),
        b["secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test]
async fn sources_are_renamed_disabled_and_their_secrets_rotated() {
    let app = spawn().await;
    let t = app.signup().await;
    let (source, old) = create_source(&app, &t).await;
    let path = format!("/webhooks/inbound-sources/{source}");

    let res = app.get(&t, &path).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 200);
    let etag = res.headers()["etag"].to_str().expect("etag").to_owned();
    let res = app
        .patch(&t, &path, json!({"name": "Partner feed (EU)"}))
        .header("if-match", &etag)
        .send()
        .await
        .expect("rename");
    assert_eq!(res.status().as_u16(), 200);
    let b: Value = res.json().await.expect("json");
    assert_eq!(b["name"], "Partner feed (EU)");
    assert_eq!(b["version"], 2);
    // A change against the old version, an empty change and a bad name change nothing.
    let res = app
        .patch(&t, &path, json!({"name": "Lost update"}))
        .header("if-match", &etag)
        .send()
        .await
        .expect("stale");
    problem(res, 412, "PRECONDITION_FAILED").await;
    let res = app.patch(&t, &path, json!({})).send().await.expect("empty");
    problem(res, 400, "VALIDATION_FAILED").await;
    let res = app
        .patch(&t, &path, json!({"name": "  "}))
        .send()
        .await
        .expect("blank");
    let p = problem(res, 400, "VALIDATION_FAILED").await;
    assert_eq!(fields(&p), ["name"]);
    let b: Value = app
        .get(&t, &path)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(b["name"], "Partner feed (EU)");
    assert_eq!(b["version"], 2);

    // Rotation: for the overlap, webhooks signed with either secret are accepted.
    let res = app
        .post(&t, &format!("{path}/rotate-secret"), json!({}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status().as_u16(), 200);
    let b: Value = res.json().await.expect("json");
    let new = b["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    assert!(b["previousSecretExpiresAt"].is_string());
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"order":1}"#;
    for (id, secret) in [("msg_old", &old), ("msg_new", &new)] {
        let res = send(&app, &source, id, now, &sign(secret, id, now, body), body).await;
        assert_eq!(res.status().as_u16(), 202, "{id}");
    }
    let res = send(
        &app,
        &source,
        "msg_forged",
        now,
        &sign(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "msg_forged",
            now,
            body,
        ),
        body,
    )
    .await;
    problem(res, 401, "UNAUTHENTICATED").await;

    // A disabled source refuses its webhooks until it is enabled again.
    let res = app
        .patch(&t, &path, json!({"enabled": false}))
        .send()
        .await
        .expect("disable");
    assert_eq!(res.status().as_u16(), 200);
    let res = send(
        &app,
        &source,
        "msg_off",
        now,
        &sign(&new, "msg_off", now, body),
        body,
    )
    .await;
    problem(res, 404, "NOT_FOUND").await;
    let res = app
        .patch(&t, &path, json!({"enabled": true}))
        .send()
        .await
        .expect("enable");
    assert_eq!(res.status().as_u16(), 200);
    let res = send(
        &app,
        &source,
        "msg_on",
        now,
        &sign(&new, "msg_on", now, body),
        body,
    )
    .await;
    assert_eq!(res.status().as_u16(), 202);

    // Another tenant's source is not found, whatever the call.
    let other = app.signup().await;
    let res = app
        .patch(&other, &path, json!({"name": "Mine now"}))
        .send()
        .await
        .expect("other tenant");
    problem(res, 404, "NOT_FOUND").await;
    let res = app
        .post(&other, &format!("{path}/rotate-secret"), json!({}))
        .send()
        .await
        .expect("other tenant");
    problem(res, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_previous_source_secret_is_refused_once_the_overlap_ends() {
    let app = spawn_with(Options {
        extra_env: vec![("CRM_WEBHOOK_ROTATION_OVERLAP_SECS", "0".into())],
    })
    .await;
    let t = app.signup().await;
    let (source, old) = create_source(&app, &t).await;
    let res = app
        .post(
            &t,
            &format!("/webhooks/inbound-sources/{source}/rotate-secret"),
            json!({}),
        )
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status().as_u16(), 200);
    let new = res.json::<Value>().await.expect("json")["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"order":2}"#;
    let res = send(
        &app,
        &source,
        "msg_a",
        now,
        &sign(&old, "msg_a", now, body),
        body,
    )
    .await;
    problem(res, 401, "UNAUTHENTICATED").await;
    let res = send(
        &app,
        &source,
        "msg_b",
        now,
        &sign(&new, "msg_b", now, body),
        body,
    )
    .await;
    assert_eq!(res.status().as_u16(), 202);
}
