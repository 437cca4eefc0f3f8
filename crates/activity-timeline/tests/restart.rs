//! Broker connections dropped while events flow lose none: the relays re-publish what was
//! not confirmed, the consumer reconnects, and each event shows once. In its own test binary
//! so it never overlaps other tests of this crate.

#[path = "it/helpers.rs"]
mod helpers;

use std::time::Duration;

use serde_json::json;

use helpers::{s, spawn};

/// Closes, from the broker side, every connection whose client-provided name contains one
/// of `needles`; the names are this service's own, so other stacks on the broker are left
/// alone.
async fn close_connections_named(needles: &[&str]) -> usize {
    let listing = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        listing.status.success(),
        "rabbitmqctl list_connections failed"
    );
    let pids: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|line| needles.iter().any(|n| line.contains(n)))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect();
    for pid in &pids {
        // A connection may close by itself in the meantime; that is fine.
        let _ = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "closed by test"])
            .output()
            .await;
    }
    pids.len()
}

#[tokio::test]
async fn broker_connections_lost_while_events_flow_lose_no_entry() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st
        .create(&admin, "/accounts", json!({"name": "Acme"}))
        .await;
    let account_id = s(&account, "id");
    let path = format!("/accounts/{account_id}/timeline");
    st.timeline_until(&admin, &path, "the account", |e| e.len() == 1)
        .await;
    const N: usize = 30;
    let mut closed = 0;
    for i in 0..N {
        let body = json!({"subjectType": "account", "subjectId": account_id,
                          "activityType": "note", "body": format!("note {i}")});
        st.create(&admin, "/activities", body).await;
        if i % 10 == 5 {
            // The timeline's consumer and relay lose their broker connections mid-stream.
            closed +=
                close_connections_named(&["consumer-activity-timeline", "relay-timeline"]).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed > 0, "the test closed no connection");
    let entries = st
        .timeline_until(&admin, &path, "every note", |e| e.len() > N)
        .await;
    assert_eq!(entries.len(), N + 1, "each note once, plus the account");
    for i in 0..N {
        let body = format!("note {i}");
        assert_eq!(
            entries
                .iter()
                .filter(|e| e["after"]["body"] == body.as_str())
                .count(),
            1,
            "{body}"
        );
    }
}
