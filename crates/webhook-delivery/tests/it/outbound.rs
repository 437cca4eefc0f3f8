//! Delivery behaviour a receiver notices: retries on schedule, no redirects, isolation of a
//! hanging endpoint, nothing lost when the worker dies, nothing sent twice by workers side
//! by side, SSRF refusals, disabling.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};

use crate::helpers::{
    Options, Tenant, TestStack, count, eventually, fields, problem, spawn, spawn_with,
};

fn codes(d: &Value) -> Vec<i64> {
    d["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| a["responseStatusCode"].as_i64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn failures_follow_the_schedule_and_end_in_success() {
    let app = spawn().await;
    let t = app.signup().await;
    let (endpoint, _) = app
        .endpoint(
            &t,
            &app.receiver.url("flaky", "500,500,200"),
            &["team.created"],
        )
        .await;
    app.team(&t, "Flaky Team").await;
    let d = eventually("the third try succeeds", || async {
        app.deliveries(&t, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(d["attemptCount"], 3);
    assert_eq!(codes(&d), [200, 500, 500], "newest first");
    assert!(
        d["attempts"][1]["nextAttemptAt"].is_string(),
        "a failed try names the next one"
    );
    assert!(d["nextAttemptAt"].is_null());
    let hits = app.receiver.hits("flaky");
    assert_eq!(hits.len(), 3);
    let id = hits[0].header("webhook-id");
    assert!(
        hits.iter().all(|h| h.header("webhook-id") == id),
        "webhook-id is stable across retries"
    );
    assert!(
        hits.iter().all(|h| h.body == hits[0].body),
        "the same bytes every time"
    );
}

#[tokio::test]
async fn redirects_fail_and_are_retried_and_recovered_by_hand() {
    let app = spawn().await;
    let t = app.signup().await;
    let (endpoint, _) = app
        .endpoint(&t, &app.receiver.url("moved", "302"), &["team.created"])
        .await;
    app.team(&t, "Moved Team").await;
    let d = eventually("the schedule runs out", || async {
        app.deliveries(&t, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(
        codes(&d),
        [302, 302, 302, 302],
        "every try failed on the 3xx"
    );
    assert!(
        app.receiver.hits("moved-target").is_empty(),
        "the redirect target is never reached"
    );

    // A manual retry sends it once more, with the same webhook-id.
    let id = d["id"].as_str().expect("id");
    let res = app
        .post(&t, &format!("/webhooks/deliveries/{id}/retry"), json!({}))
        .send()
        .await
        .expect("retry");
    assert_eq!(res.status().as_u16(), 202);
    eventually("the manual retry is tried", || async {
        let d = app.deliveries(&t, &endpoint).await.into_iter().next()?;
        (d["status"] == "failed" && d["attemptCount"].as_i64() == Some(5)).then_some(())
    })
    .await;
    let hits = app.receiver.hits("moved");
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter()
            .all(|h| h.header("webhook-id") == hits[0].header("webhook-id"))
    );

    // Recover schedules everything that never succeeded since a time.
    let res = app
        .post(
            &t,
            &format!("/webhooks/endpoints/{endpoint}/recover"),
            json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .send()
        .await
        .expect("recover");
    assert_eq!(res.status().as_u16(), 202);
    let b: Value = res.json().await.expect("json");
    assert_eq!(b["scheduled"], 1);
    eventually("the recovered delivery is tried", || async {
        (app.receiver.hits("moved").len() >= 6).then_some(())
    })
    .await;
}

/// Queues `copies` more due deliveries, an hour old and older than anything new, for each
/// delivery of the endpoints whose URL meets `url_condition` (SQL on `e.url`).
async fn backlog(admin: &sea_orm::DatabaseConnection, copies: u32, url_condition: &str) {
    let sql = format!(
        "INSERT INTO webhooks.deliveries (tenant_id, id, endpoint_id, event_id, event_type, \
                                          payload, status, next_attempt_at) \
         SELECT d.tenant_id, gen_random_uuid(), d.endpoint_id, gen_random_uuid(), d.event_type, \
                d.payload, 'pending', now() - interval '1 hour' + n * interval '1 ms' \
           FROM webhooks.deliveries d JOIN webhooks.endpoints e \
             ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id \
          CROSS JOIN generate_series(1, {copies}) n \
          WHERE e.url {url_condition}"
    );
    sea_orm::ConnectionTrait::execute_unprepared(admin, &sql)
        .await
        .expect("a backlog");
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_another() {
    let app = spawn_with(Options {
        extra_env: vec![("CRM_WEBHOOK_TIMEOUT_SECS", "20".into())],
    })
    .await;
    let t = app.signup().await;
    app.endpoint(&t, &app.receiver.url("hangs", "0"), &["team.created"])
        .await;
    app.endpoint(&t, &app.receiver.url("quick", "200"), &["team.created"])
        .await;
    for n in 0..4 {
        app.team(&t, &format!("Team {n}")).await;
    }
    eventually("the quick endpoint gets every event", || async {
        (app.receiver.hits("quick").len() == 4).then_some(())
    })
    .await;
    assert!(
        app.receiver.hanging("hangs") > 0,
        "the other endpoint is still hanging meanwhile"
    );
    assert!(
        app.receiver.hits("hangs").len() <= 2,
        "never more than the per-endpoint limit in flight at a hanging endpoint"
    );
}

#[tokio::test]
async fn a_backlog_behind_a_hanging_endpoint_does_not_hold_back_another() {
    let app = spawn_with(Options {
        extra_env: vec![("CRM_WEBHOOK_TIMEOUT_SECS", "20".into())],
    })
    .await;
    let t = app.signup().await;
    app.endpoint(&t, &app.receiver.url("stuck", "0"), &["team.created"])
        .await;
    app.endpoint(&t, &app.receiver.url("fast", "200"), &["team.created"])
        .await;
    app.team(&t, "First Team").await;
    eventually("the hanging endpoint holds a try", || async {
        (app.receiver.hanging("stuck") > 0 && app.receiver.hits("fast").len() == 1).then_some(())
    })
    .await;
    // Thousands of due deliveries wait behind the hanging endpoint, older than anything new:
    // more than a claim reads in due order before it goes endpoint by endpoint.
    let admin = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    backlog(&admin, 3000, "LIKE '%/stuck/%'").await;
    let _ = admin.close().await;
    app.team(&t, "Second Team").await;
    eventually("the other endpoint gets the new event", || async {
        (app.receiver.hits("fast").len() == 2).then_some(())
    })
    .await;
    assert!(
        app.receiver.hanging("stuck") > 0,
        "the hanging endpoint is still hanging meanwhile"
    );
    assert!(
        app.receiver.hits("stuck").len() <= 2,
        "never more than the per-endpoint limit in flight at a hanging endpoint"
    );
}

#[tokio::test]
async fn a_slot_left_free_by_endpoints_at_their_limit_still_serves_another() {
    // Seven slots, three per endpoint: two hanging endpoints fill six, and what the worker
    // holds for them ahead leaves less than a round of room.
    let app = spawn_with(Options {
        extra_env: vec![
            ("CRM_WEBHOOK_TIMEOUT_SECS", "60".into()),
            ("CRM_WEBHOOK_CONCURRENCY", "7".into()),
            ("CRM_WEBHOOK_PER_ENDPOINT_CONCURRENCY", "3".into()),
        ],
    })
    .await;
    let t = app.signup().await;
    for name in ["stuck", "stalled"] {
        app.endpoint(&t, &app.receiver.url(name, "0"), &["team.created"])
            .await;
    }
    app.endpoint(&t, &app.receiver.url("fast", "200"), &["team.created"])
        .await;
    app.team(&t, "First Team").await;
    eventually("both slow endpoints hold a try", || async {
        (app.receiver.hanging("stuck") > 0
            && app.receiver.hanging("stalled") > 0
            && app.receiver.hits("fast").len() == 1)
            .then_some(())
    })
    .await;
    let admin = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    backlog(&admin, 20, "NOT LIKE '%/fast/%'").await;
    // The worker holds six rounds per endpoint: 2 × 18 of the 42 it may hold.
    eventually("the worker holds what it may of the backlog", || async {
        let held = count(
            &admin,
            "SELECT count(*) AS n FROM webhooks.queue WHERE lease_until > now()",
        )
        .await;
        (held == 36).then_some(())
    })
    .await;
    let _ = admin.close().await;
    app.team(&t, "Second Team").await;
    eventually("the free slot sends the new event", || async {
        (app.receiver.hits("fast").len() == 2).then_some(())
    })
    .await;
    assert!(
        app.receiver.hanging("stuck") > 0 && app.receiver.hanging("stalled") > 0,
        "the slow endpoints are still hanging meanwhile"
    );
}

#[tokio::test]
async fn a_try_whose_delivery_another_worker_holds_now_is_not_recorded() {
    let app = spawn().await;
    let t = app.signup().await;
    let gated = app.try_held_at_gate(&t, "Held Team").await;
    // Another worker holds the delivery now, as after this worker's lease ran out.
    let admin = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        "UPDATE webhooks.queue SET worker = '00000000-0000-0000-0000-0000000000bb'",
    )
    .await
    .expect("the lease passes");
    app.receiver.open_gate();
    eventually("the try is answered", || async {
        (app.receiver.hanging("gated") == 0).then_some(())
    })
    .await;
    // Tries are recorded in the order they end: once a later one is, the held one was.
    let (fast, _) = app
        .endpoint(&t, &app.receiver.url("fast", "200"), &["team.created"])
        .await;
    app.team(&t, "Later Team").await;
    eventually("the later try is recorded", || async {
        let ds = app.deliveries(&t, &fast).await;
        (ds.len() == 1 && ds[0]["status"] == "succeeded").then_some(())
    })
    .await;
    let held = app
        .deliveries(&t, &gated)
        .await
        .into_iter()
        .find(|d| d["payload"].to_string().contains("Held Team"))
        .expect("the held delivery");
    assert_eq!(held["attemptCount"], 0, "no attempt recorded: {held}");
    assert_eq!(held["status"], "delivering", "still the other worker's");
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) AS n FROM webhooks.queue \
             WHERE worker = '00000000-0000-0000-0000-0000000000bb'"
        )
        .await,
        1,
        "the other worker's lease stays"
    );
    let _ = admin.close().await;
}

#[tokio::test]
async fn a_delivery_survives_the_worker_dying_mid_flight() {
    let app = spawn().await;
    let t = app.signup().await;
    let (endpoint, _) = app
        .endpoint(&t, &app.receiver.url("crash", "0,200"), &["team.created"])
        .await;
    app.team(&t, "Crash Team").await;
    let first = eventually("the first try reaches the receiver", || async {
        app.receiver.hits("crash").into_iter().next()
    })
    .await;
    app.kill_worker().await;
    app.restart_worker();
    let d = eventually(
        "a new worker delivers it once the lease runs out",
        || async {
            app.deliveries(&t, &endpoint)
                .await
                .into_iter()
                .find(|d| d["status"] == "succeeded")
        },
    )
    .await;
    let hits = app.receiver.hits("crash");
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[1].header("webhook-id"),
        first.header("webhook-id"),
        "a redelivery keeps its webhook-id"
    );
    assert_eq!(d["webhookId"], first.header("webhook-id"));
}

#[tokio::test]
async fn workers_side_by_side_send_each_delivery_once() {
    let app = spawn().await;
    app.another_worker();
    let t = app.signup().await;
    let mut endpoints = Vec::new();
    for n in 0..3 {
        let url = app.receiver.url(&format!("pair{n}"), "200");
        endpoints.push(app.endpoint(&t, &url, &["team.created"]).await.0);
    }
    for i in 0..25 {
        app.team(&t, &format!("Team {i}")).await;
    }
    for (n, endpoint) in endpoints.iter().enumerate() {
        eventually("every delivery succeeds after one try", || async {
            let ds = app.deliveries(&t, endpoint).await;
            (ds.len() == 25
                && ds
                    .iter()
                    .all(|d| d["status"] == "succeeded" && d["attemptCount"] == 1))
            .then_some(())
        })
        .await;
        let hits = app.receiver.hits(&format!("pair{n}"));
        let ids: HashSet<&str> = hits.iter().map(|h| h.header("webhook-id")).collect();
        assert_eq!(hits.len(), 25, "no delivery is sent twice");
        assert_eq!(ids.len(), 25, "each delivery has its own webhook-id");
    }
}

#[tokio::test]
async fn private_and_metadata_targets_are_refused() {
    let app = spawn_with(Options {
        extra_env: vec![("CRM_WEBHOOK_ALLOW_NETS", String::new())],
    })
    .await;
    let t = app.signup().await;
    for url in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://100.64.0.1/hook",
        &app.receiver.url("direct", "200"),
    ] {
        let res = app
            .post(&t, "/webhooks/endpoints", json!({"url": url}))
            .send()
            .await
            .expect("create");
        let p = problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(fields(&p), ["url"], "{url}");
    }
    // A name is resolved at delivery time; loopback behind it is refused too.
    let port = app.receiver.addr.expect("addr").port();
    let (endpoint, _) = app
        .endpoint(
            &t,
            &format!("http://localhost:{port}/s/named/200"),
            &["team.created"],
        )
        .await;
    app.team(&t, "Private Team").await;
    let d = eventually("every try is refused", || async {
        app.deliveries(&t, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
    })
    .await;
    let error = d["attempts"][0]["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(error.contains("refused"), "{error}");
    assert!(
        app.receiver.hits("named").is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_tells_the_tenant() {
    let app = spawn().await;
    let t = app.signup().await;
    let (gone, _) = app
        .endpoint(&t, &app.receiver.url("gone", "410"), &["team.created"])
        .await;
    app.endpoint(
        &t,
        &app.receiver.url("watcher", "200"),
        &["webhook_endpoint.disabled"],
    )
    .await;
    app.team(&t, "Gone Team").await;
    let hit = eventually("the tenant hears of the disabled endpoint", || async {
        app.receiver.hits("watcher").into_iter().next()
    })
    .await;
    let body = hit.json();
    assert_eq!(body["type"], "webhook_endpoint.disabled");
    assert_eq!(body["data"]["entityId"], gone.as_str());
    assert_eq!(body["data"]["after"]["disabledReason"], "gone");
    let e: Value = app
        .get(&t, &format!("/webhooks/endpoints/{gone}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(e["enabled"], false);
    assert_eq!(e["disabledReason"], "gone");
    assert_eq!(app.receiver.hits("gone").len(), 1, "410 is not retried");

    // Enabling it again is the tenant's decision.
    let res = app
        .patch(
            &t,
            &format!("/webhooks/endpoints/{gone}"),
            json!({"enabled": true}),
        )
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status().as_u16(), 200);
    let e: Value = res.json().await.expect("json");
    assert_eq!(e["enabled"], true);
    assert!(e["disabledReason"].is_null());
}

#[tokio::test]
async fn an_endpoint_failing_too_long_is_disabled() {
    // The 5 days shrink to half a second; the schedule outlasts it.
    let app = spawn_with(Options {
        extra_env: vec![
            ("CRM_WEBHOOK_DISABLE_AFTER_SECS", "0.5".into()),
            (
                "CRM_WEBHOOK_RETRY_SCHEDULE_SECS",
                "0.3,0.3,0.3,0.3,0.3".into(),
            ),
        ],
    })
    .await;
    let t = app.signup().await;
    let (endpoint, _) = app
        .endpoint(&t, &app.receiver.url("broken", "500"), &["team.created"])
        .await;
    app.team(&t, "Broken Team").await;
    let e = eventually("the endpoint is disabled", || async {
        let e: Value = app
            .get(&t, &format!("/webhooks/endpoints/{endpoint}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert_eq!(e["disabledReason"], "failing");
    let d = eventually("its pending delivery is dropped", || async {
        app.deliveries(&t, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
    })
    .await;
    assert!(
        d["attemptCount"].as_i64().unwrap_or(0) < 6,
        "no try after disabling"
    );
}

/// An endpoint of `t` with one team event delivered to it per name, the delivery of
/// "Old Team" aged past the 90 days of retention; and an admin connection.
async fn delivered_and_aged(
    app: &TestStack,
    t: &Tenant,
    teams: &[&str],
) -> (String, sea_orm::DatabaseConnection) {
    let (endpoint, _) = app
        .endpoint(t, &app.receiver.url("kept", "200"), &["team.created"])
        .await;
    for name in teams {
        app.team(t, name).await;
    }
    eventually("every team is delivered", || async {
        let ds = app.deliveries(t, &endpoint).await;
        (ds.len() == teams.len() && ds.iter().all(|d| d["status"] == "succeeded")).then_some(())
    })
    .await;
    let admin = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        "UPDATE webhooks.deliveries SET created_at = now() - interval '91 days' \
         WHERE payload LIKE '%Old Team%'",
    )
    .await
    .expect("age a delivery");
    (endpoint, admin)
}

#[tokio::test]
async fn deliveries_older_than_the_retention_are_purged() {
    let app = spawn().await;
    let t = app.signup().await;
    let (endpoint, admin) = delivered_and_aged(&app, &t, &["Old Team", "New Team"]).await;
    // A worker purges at start and then hourly.
    app.kill_worker().await;
    app.restart_worker();
    let left = eventually("the old delivery is purged", || async {
        let ds = app.deliveries(&t, &endpoint).await;
        (ds.len() == 1).then_some(ds)
    })
    .await;
    assert!(left[0]["payload"].to_string().contains("New Team"));
    // Its try went with it; the kept delivery's try is kept.
    assert_eq!(
        count(&admin, "SELECT count(*) AS n FROM webhooks.attempts").await,
        1,
        "one try left"
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) AS n FROM webhooks.attempts a JOIN webhooks.deliveries d \
             ON d.tenant_id = a.tenant_id AND d.id = a.delivery_id \
             WHERE d.payload LIKE '%New Team%'"
        )
        .await,
        1,
        "the kept delivery's try"
    );
    let _ = admin.close().await;
}

/// A delivery that a record is settling while the sweep runs is left for the next sweep,
/// which removes it with the try recorded meanwhile: no try outlives its delivery.
#[tokio::test]
async fn the_sweep_leaves_a_delivery_being_recorded_and_takes_it_with_its_tries_next_time() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let app = spawn().await;
    let t = app.signup().await;
    let (_, admin) = delivered_and_aged(&app, &t, &["Old Team"]).await;
    app.stop_worker().await;
    let purge = "SELECT webhooks.purge(7776000) AS n";

    // A record holds the delivery's row: it has settled it again and adds a try.
    let record = admin.begin().await.expect("a record's transaction");
    record
        .execute_unprepared(
            "UPDATE webhooks.deliveries SET attempt_count = attempt_count + 1, updated_at = now();
             INSERT INTO webhooks.attempts (tenant_id, id, delivery_id, status)
             SELECT tenant_id, gen_random_uuid(), id, 'succeeded' FROM webhooks.deliveries;",
        )
        .await
        .expect("record a try");
    let sweeper = sea_orm::Database::connect(&app.admin_url)
        .await
        .expect("admin db");
    // The sweep skips the held row rather than wait for it.
    let swept = tokio::time::timeout(Duration::from_secs(10), count(&sweeper, purge))
        .await
        .expect("the sweep does not wait for the record");
    assert_eq!(swept, 0, "the held delivery is left");
    record.commit().await.expect("commit the record");
    assert_eq!(
        count(&admin, "SELECT count(*) AS n FROM webhooks.attempts").await,
        2,
        "both tries are kept with their delivery"
    );

    assert_eq!(count(&sweeper, purge).await, 1, "the next sweep takes it");
    assert_eq!(
        count(&admin, "SELECT count(*) AS n FROM webhooks.attempts").await,
        0,
        "with every try, the later one too"
    );
    let _ = sweeper.close().await;
    let _ = admin.close().await;
}
