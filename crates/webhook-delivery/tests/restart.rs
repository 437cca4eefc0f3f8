//! RabbitMQ restarted while events flow: every event committed before, during and after the
//! outage reaches each endpoint exactly once, and a redelivery keeps its webhook-id. A test
//! binary of its own, so no other test of this crate runs while the broker is down.

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

use std::collections::HashMap;

use crm_bus::outage::Outage;
use helpers::{eventually, spawn};

#[tokio::test]
async fn a_broker_restart_loses_no_webhook_and_sends_none_twice() {
    const PER_PHASE: usize = 5;
    let app = spawn().await;
    let t = app.signup().await;
    let (first, _) = app
        .endpoint(&t, &app.receiver.url("first", "200"), &["team.created"])
        .await;
    let (second, _) = app
        .endpoint(&t, &app.receiver.url("second", "200"), &["team.created"])
        .await;

    let mut names = Vec::new();
    for n in 0..PER_PHASE {
        let name = format!("Before {n}");
        app.team(&t, &name).await;
        names.push(name);
    }
    let outage = Outage::begin().await.expect("stop the broker");
    for n in 0..PER_PHASE {
        let name = format!("During {n}");
        app.team(&t, &name).await;
        names.push(name);
    }
    outage.end().await.expect("start the broker again");
    for n in 0..PER_PHASE {
        let name = format!("After {n}");
        app.team(&t, &name).await;
        names.push(name);
    }

    for (path, endpoint) in [("first", &first), ("second", &second)] {
        // Once every delivery is recorded as succeeded nothing more is sent for it, so the
        // receiver's count is final.
        let ds = eventually("every team is delivered to the endpoint", || async {
            let ds = app.deliveries(&t, endpoint).await;
            (ds.len() >= names.len() && ds.iter().all(|d| d["status"] == "succeeded")).then_some(ds)
        })
        .await;
        assert_eq!(ds.len(), names.len(), "{path}: one message per event");
        assert!(
            ds.iter().all(|d| d["attemptCount"] == 1),
            "{path}: no message needed a second try"
        );
        let mut by_team: HashMap<String, Vec<String>> = HashMap::new();
        for h in app.receiver.hits(path) {
            let body = h.json();
            let team = body["data"]["after"]["name"]
                .as_str()
                .expect("team name")
                .to_owned();
            by_team
                .entry(team)
                .or_default()
                .push(h.header("webhook-id").to_owned());
        }
        for name in &names {
            let ids = by_team.get(name).cloned().unwrap_or_default();
            assert_eq!(ids.len(), 1, "{path}: {name} arrived {} times", ids.len());
        }
        assert_eq!(by_team.len(), names.len(), "{path}: nothing else arrived");
        let mut sent: Vec<&str> = by_team.values().map(|ids| ids[0].as_str()).collect();
        let mut recorded: Vec<&str> = ds.iter().filter_map(|d| d["webhookId"].as_str()).collect();
        sent.sort_unstable();
        recorded.sort_unstable();
        assert_eq!(
            sent, recorded,
            "{path}: each message went out under its own webhook-id"
        );
    }
}
