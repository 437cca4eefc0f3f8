//! A worker stopped by a deploy drains: tries in flight finish and are recorded, nothing is
//! sent twice, and what cannot finish in time is handed back at once.

use crate::helpers::{Options, count, eventually, spawn_with};

#[tokio::test]
async fn a_stopping_worker_finishes_and_records_tries_in_flight() {
    let app = spawn_with(Options::default()).await;
    let t = app.signup().await;
    let endpoint = app.try_held_at_gate(&t, "Drained Team").await;
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
        "handed back, not left leased for the lease's 245 seconds"
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

/// What a claim of the lease table's version (m0005) writes: a lease for every queued
/// delivery, taken over where a lease has run out. Such a claim can still be running as the
/// step to the queue commits.
const PREVIOUS_CLAIM: &str = "WITH taken AS (
    INSERT INTO webhooks.leases AS l (tenant_id, delivery_id, worker, until)
    SELECT q.tenant_id, q.delivery_id, '00000000-0000-0000-0000-0000000000f5',
           now() + interval '1 minute'
      FROM webhooks.queue q
    ON CONFLICT (tenant_id, delivery_id) DO UPDATE
       SET worker = excluded.worker, until = excluded.until
     WHERE l.until <= now()
    RETURNING 1)
    SELECT count(*) AS n FROM taken";

/// What that version's release writes for the same worker.
const PREVIOUS_RELEASE: &str = "WITH released AS (
    DELETE FROM webhooks.leases l WHERE l.worker = '00000000-0000-0000-0000-0000000000f5'
    RETURNING 1)
    SELECT count(*) AS n FROM released";

#[tokio::test]
async fn the_delivery_queue_migration_steps_back_and_forth_keeping_leases_and_deliveries() {
    use crm_kit::admin::retry_deadlocks;
    use crm_migrations::{MigratorTrait, webhooks::Migrator};

    let app = spawn_with(Options::default()).await;
    let admin = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    let t = app.signup().await;

    // A try in flight keeps its lease through the step back and the step forward.
    let endpoint = app.try_held_at_gate(&t, "Held Team").await;
    // Every step since the lease table (m0005): the queue itself and the claims after it.
    // Each try steps back only what is still applied, so a try after a deadlock does not
    // go past m0005.
    let step_back = || async {
        let applied = Migrator::get_applied_migrations(&admin).await?.len() as u32;
        match applied.saturating_sub(5) {
            0 => Ok(()),
            n => Migrator::down(&admin, Some(n)).await,
        }
    };
    retry_deadlocks(step_back).await.expect("down");
    assert_eq!(
        count(&admin, "SELECT count(*) AS n FROM webhooks.leases").await,
        1,
        "the lease is kept in the previous form"
    );
    retry_deadlocks(|| Migrator::up(&admin, None))
        .await
        .expect("up again");
    let ds = app.deliveries(&t, &endpoint).await;
    assert_eq!(ds[0]["status"], "delivering", "still held by the worker");
    // A second try goes in flight after the step forward, its lease on the queue alone.
    app.team(&t, "Second Held Team").await;
    eventually("the second try is in flight", || async {
        (app.receiver.hanging("gated") == 2).then_some(())
    })
    .await;
    assert_eq!(
        count(&admin, PREVIOUS_CLAIM).await,
        0,
        "a claim of the previous version takes neither try in flight"
    );
    app.receiver.open_gate();
    eventually("the held tries are recorded", || async {
        let ds = app.deliveries(&t, &endpoint).await;
        (ds.len() == 2 && ds.iter().all(|d| d["status"] == "succeeded")).then_some(())
    })
    .await;
    assert_eq!(app.receiver.hits("gated").len(), 2, "each sent once");

    // A delivery queued while the queue is gone is in it after the step forward.
    app.stop_worker().await;
    retry_deadlocks(step_back).await.expect("down");
    app.team(&t, "Queued While Down").await;
    eventually("the fan-out stores the delivery", || async {
        let stored = count(
            &admin,
            "SELECT count(*) AS n FROM webhooks.deliveries \
             WHERE payload LIKE '%Queued While Down%'",
        )
        .await;
        (stored == 1).then_some(())
    })
    .await;
    retry_deadlocks(|| Migrator::up(&admin, None))
        .await
        .expect("up again");
    // A claim of the previous version after the step forward holds the queued delivery,
    // and its release hands it back.
    assert_eq!(
        count(&admin, PREVIOUS_CLAIM).await,
        1,
        "the free delivery is taken"
    );
    let queued = |ds: Vec<serde_json::Value>| {
        ds.into_iter()
            .find(|d| d["payload"].to_string().contains("Queued While Down"))
            .expect("the queued delivery")
    };
    let d = queued(app.deliveries(&t, &endpoint).await);
    assert_eq!(d["status"], "delivering", "held in the queue too");
    assert_eq!(count(&admin, PREVIOUS_RELEASE).await, 1);
    let d = queued(app.deliveries(&t, &endpoint).await);
    assert_eq!(d["status"], "pending", "free again");
    app.restart_worker();
    let ds = eventually("the later delivery is sent", || async {
        let ds = app.deliveries(&t, &endpoint).await;
        (ds.len() == 3 && ds.iter().all(|d| d["status"] == "succeeded")).then_some(ds)
    })
    .await;
    assert!(ds.iter().all(|d| d["attemptCount"] == 1));
    assert_eq!(app.receiver.hits("gated").len(), 3);
    let _ = admin.close().await;
}

/// A migration step that PostgreSQL aborts as the victim of a deadlock runs again, and its
/// second try commits: nothing of the aborted one is left, and nothing is applied twice.
#[tokio::test]
async fn a_step_chosen_as_a_deadlock_victim_runs_again_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crm_kit::admin::retry_deadlocks;
    use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};

    let app = spawn_with(Options::default()).await;
    let admin = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    admin
        .execute_unprepared(
            "CREATE TABLE public.pair (id integer PRIMARY KEY, n integer NOT NULL);
             INSERT INTO public.pair VALUES (1, 0), (2, 0);",
        )
        .await
        .expect("table");
    // The other session holds row 2, then waits for row 1 once told to.
    let other = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("other db");
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let session = tokio::spawn(async move {
        let tx = other.begin().await?;
        tx.execute_unprepared("UPDATE public.pair SET n = n + 1 WHERE id = 2")
            .await?;
        let _ = held_tx.send(());
        let _ = go_rx.await;
        tx.execute_unprepared("UPDATE public.pair SET n = n + 1 WHERE id = 1")
            .await?;
        tx.commit().await?;
        Ok::<_, DbErr>(())
    });
    held_rx.await.expect("row 2 held");

    let tries = AtomicUsize::new(0);
    let mut go = Some(go_tx);
    retry_deadlocks(|| {
        let (admin, tries, go) = (&admin, &tries, go.take());
        async move {
            tries.fetch_add(1, Ordering::SeqCst);
            let tx = admin.begin().await?;
            // This session checks for a deadlock first, so it is the one aborted.
            tx.execute_unprepared("SET LOCAL deadlock_timeout = '10ms'")
                .await?;
            tx.execute_unprepared("UPDATE public.pair SET n = n + 10 WHERE id = 1")
                .await?;
            if let Some(go) = go {
                let _ = go.send(());
                eventually("the other session waits for row 1", || async {
                    let waiting = count(
                        admin,
                        "SELECT count(*) AS n FROM pg_stat_activity \
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    .await;
                    (waiting > 0).then_some(())
                })
                .await;
            }
            match tx
                .execute_unprepared("UPDATE public.pair SET n = n + 10 WHERE id = 2")
                .await
            {
                Ok(_) => tx.commit().await,
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        }
    })
    .await
    .expect("the second try commits");
    session.await.expect("session").expect("the other commits");

    assert_eq!(
        tries.load(Ordering::SeqCst),
        2,
        "aborted once, then run again"
    );
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT n FROM public.pair ORDER BY id",
        ))
        .await
        .expect("rows");
    let n: Vec<i32> = rows
        .iter()
        .map(|r| r.try_get::<i32>("", "n").expect("n"))
        .collect();
    assert_eq!(n, vec![11, 11], "each session's changes once");
    let _ = admin.close().await;
}
