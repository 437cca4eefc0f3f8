//! RabbitMQ restarted while events flow loses none: what is committed while the broker is
//! down waits in the outboxes, the relays publish it once the broker is back, the consumer
//! reconnects, and each event shows once. In its own test binary so it never overlaps other
//! tests of this crate.

#[path = "it/helpers.rs"]
mod helpers;

use std::time::Duration;

use crm_bus::outage::Outage;
use serde_json::json;

use helpers::{s, spawn};

#[tokio::test]
async fn a_broker_restart_while_events_flow_loses_no_entry() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st
        .create(&admin, "/accounts", json!({"name": "Acme"}))
        .await;
    let account_id = s(&account, "id");
    let path = format!("/accounts/{account_id}/timeline");
    st.timeline_until(&admin, &path, "the account", |e| e.len() == 1)
        .await;
    // Notes before, during and after the outage; the ones before may still be on their way
    // (in the relay, the broker or the consumer) when it starts.
    const N: usize = 30;
    let mut outage = None;
    for i in 0..N {
        if i == 10 {
            outage = Some(Outage::begin().await.expect("stop the broker"));
        }
        if i == 20 {
            outage
                .take()
                .expect("the broker is down")
                .end()
                .await
                .expect("start the broker again");
        }
        let body = json!({"subjectType": "account", "subjectId": account_id,
                          "activityType": "note", "body": format!("note {i}")});
        st.create(&admin, "/activities", body).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
