//! A worker stopped by a deploy drains: tries in flight finish and are recorded, nothing is
//! sent twice, and what cannot finish in time is handed back at once.

use crate::helpers::{Options, eventually, spawn_with};

#[tokio::test]
async fn a_stopping_worker_finishes_and_records_tries_in_flight() {
    let app = spawn_with(Options::default()).await;
    let t = app.signup().await;
    let (endpoint, _) = app
        .endpoint(&t, &app.receiver.url("gated", "1"), &["team.created"])
        .await;
    app.team(&t, "Drained Team").await;
    eventually("the try is in flight", || async {
        (app.receiver.hanging("gated") == 1).then_some(())
    })
    .await;
    let ds = app.deliveries(&t, &endpoint).await;
    assert_eq!(ds[0]["status"], "delivering", "a try in flight shows");
    // The worker is told to stop first; the receiver answers while it drains.
    tokio::join!(app.stop_worker(), async { app.receiver.open_gate() });
    let ds = app.deliveries(&t, &endpoint).await;
    assert_eq!(ds.len(), 1);
    assert_eq!(
        ds[0]["status"], "succeeded",
        "recorded before the worker stopped"
    );
    assert_eq!(ds[0]["attemptCount"], 1);

    // The next worker sends what comes next and nothing again.
    app.restart_worker();
    app.team(&t, "Later Team").await;
    eventually("the next event is delivered", || async {
        let ds = app.deliveries(&t, &endpoint).await;
        (ds.len() == 2 && ds.iter().all(|d| d["status"] == "succeeded")).then_some(())
    })
    .await;
    let hits = app.receiver.hits("gated");
    assert_eq!(hits.len(), 2, "the drained delivery was not sent again");
    assert_ne!(hits[0].header("webhook-id"), hits[1].header("webhook-id"));
}

#[tokio::test]
async fn a_drain_that_runs_out_of_time_hands_deliveries_back() {
    let app = spawn_with(Options {
        extra_env: vec![
            ("CRM_WEBHOOK_TIMEOUT_SECS", "60".into()),
            ("CRM_WEBHOOK_DRAIN_SECS", "0.3".into()),
        ],
    })
    .await;
    let t = app.signup().await;
    let (endpoint, _) = app
        .endpoint(&t, &app.receiver.url("stuck", "0,200"), &["team.created"])
        .await;
    app.team(&t, "Stuck Team").await;
    let first = eventually("the try is in flight", || async {
        app.receiver.hits("stuck").into_iter().next()
    })
    .await;
    app.stop_worker().await;
    let ds = app.deliveries(&t, &endpoint).await;
    assert_eq!(ds.len(), 1);
    assert_eq!(
        ds[0]["status"], "pending",
        "handed back, not left leased for the lease's 65 seconds"
    );
    assert_eq!(ds[0]["attemptCount"], 0, "an abandoned try is not a try");

    app.restart_worker();
    let d = eventually("the next worker delivers it", || async {
        app.deliveries(&t, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(d["attemptCount"], 1);
    let hits = app.receiver.hits("stuck");
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[1].header("webhook-id"),
        first.header("webhook-id"),
        "the same message"
    );
}
