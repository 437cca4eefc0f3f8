//! Deliveries verify as Standard Webhooks, in Rust and with the `standardwebhooks` package
//! from PyPI; tampering fails; during a rotation both secrets verify.

use std::{io::Write, process::Command};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::helpers::{Hit, eventually, spawn};

/// An HMAC check written from the specification, independent of the service's code.
fn rust_verifies(secret: &str, id: &str, ts: &str, signatures: &str, body: &[u8]) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    signatures.split(' ').any(|s| s == expected)
}

const PY: &str = r#"
import sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
body = sys.stdin.buffer.read()
try:
    Webhook(sys.argv[1]).verify(body, {"webhook-id": sys.argv[2], "webhook-timestamp": sys.argv[3], "webhook-signature": sys.argv[4]})
    print("ok")
except WebhookVerificationError as e:
    print("refused:", e)
"#;

/// The Python interpreter that has `standardwebhooks` (CRM_PYTHON, else python3); None when
/// none has it. Under CI it must be there: CI installs it (.ci/run).
fn python() -> Option<String> {
    let py = std::env::var("CRM_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import standardwebhooks"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must provide the standardwebhooks Python package ({py} cannot import it; .ci/run installs it)"
    );
    eprintln!(
        "skipping the standardwebhooks check: `{py} -c 'import standardwebhooks'` fails (pip install standardwebhooks)"
    );
    None
}

/// What the PyPI package says of a delivery; None when the package is not installed.
fn python_verifies(
    secret: &str,
    id: &str,
    ts: &str,
    signatures: &str,
    body: &[u8],
) -> Option<bool> {
    let py = python()?;
    let mut child = Command::new(py)
        .args(["-c", PY, secret, id, ts, signatures])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write body");
    let out = child.wait_with_output().expect("python output");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some(text == "ok")
}

/// Checks a hit both ways and returns whether it verified (Python agrees with Rust).
fn verifies(secret: &str, id: &str, ts: &str, sig: &str, body: &[u8]) -> bool {
    let rust = rust_verifies(secret, id, ts, sig, body);
    if let Some(py) = python_verifies(secret, id, ts, sig, body) {
        assert_eq!(py, rust, "standardwebhooks and the Rust check disagree");
    }
    rust
}

fn check(hit: &Hit, secret: &str) -> bool {
    verifies(
        secret,
        hit.header("webhook-id"),
        hit.header("webhook-timestamp"),
        hit.header("webhook-signature"),
        &hit.body,
    )
}

#[tokio::test]
async fn deliveries_verify_and_tampering_fails() {
    let app = spawn().await;
    let t = app.signup().await;
    let (endpoint, secret) = app
        .endpoint(&t, &app.receiver.url("signed", "200"), &["team.created"])
        .await;
    assert!(secret.starts_with("whsec_"));
    assert!(STANDARD.decode(&secret[6..]).expect("base64").len() >= 24);
    app.team(&t, "Signed Team").await;

    let hit = eventually("the receiver gets the event", || async {
        app.receiver.hits("signed").into_iter().next()
    })
    .await;
    assert!(hit.header("webhook-id").starts_with("msg_"));
    assert_eq!(hit.header("content-type"), "application/json");
    let body = hit.json();
    assert_eq!(body["type"], "team.created");
    assert!(body["timestamp"].is_string());
    assert_eq!(body["data"]["after"]["name"], "Signed Team");
    assert!(check(&hit, &secret), "the delivery verifies");

    let (id, ts, sig) = (
        hit.header("webhook-id"),
        hit.header("webhook-timestamp"),
        hit.header("webhook-signature"),
    );
    let mut tampered = hit.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(!verifies(&secret, id, ts, sig, &tampered), "tampered body");
    assert!(
        !verifies(&secret, "msg_other", ts, sig, &hit.body),
        "tampered id"
    );
    let later = (ts.parse::<i64>().expect("ts") + 1).to_string();
    assert!(
        !verifies(&secret, id, &later, sig, &hit.body),
        "tampered timestamp"
    );

    // The attempt is recorded with the receiver's answer.
    let d = eventually("the delivery is recorded as succeeded", || async {
        app.deliveries(&t, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(d["webhookId"], hit.header("webhook-id"));
    assert_eq!(d["payload"], body);
    assert_eq!(d["attempts"][0]["responseStatusCode"], 200);
    assert!(
        d["attempts"][0]["responseBody"]
            .as_str()
            .expect("body")
            .starts_with("answer 200")
    );
}

#[tokio::test]
async fn during_rotation_both_secrets_verify() {
    let app = spawn().await;
    let t = app.signup().await;
    let (endpoint, old) = app
        .endpoint(&t, &app.receiver.url("rotated", "200"), &["team.created"])
        .await;
    let res = app
        .post(
            &t,
            &format!("/webhooks/endpoints/{endpoint}/rotate-secret"),
            json!({}),
        )
        .send()
        .await
        .expect("rotate");
    assert_eq!(res.status().as_u16(), 200);
    let b: serde_json::Value = res.json().await.expect("json");
    let new = b["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    assert!(b["previousSecretExpiresAt"].is_string(), "{b}");

    app.team(&t, "Rotated Team").await;
    let hit = eventually("the receiver gets the event", || async {
        app.receiver.hits("rotated").into_iter().next()
    })
    .await;
    assert_eq!(hit.header("webhook-signature").split(' ').count(), 2);
    assert!(check(&hit, &old), "the old secret verifies");
    assert!(check(&hit, &new), "the new secret verifies");
    assert!(
        !check(&hit, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "another secret does not"
    );
}
