use std::time::Duration;

use crm_bus::{Event, outbox};
use crm_kit::ids::TenantId;
use lapin::types::AMQPValue;
use tokio_util::sync::CancellationToken;

use crate::helpers::{SCHEMA, TestEnv, close_connections_named, user_created};

fn header(delivery: &lapin::message::Delivery, key: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn committed_change_is_published_with_its_envelope() {
    let env = TestEnv::new().await;
    let probe = env.probe("user.*").await;
    let cancel = CancellationToken::new();
    let relay = tokio::spawn(env.relay().run(cancel.clone()));

    let tenant = TenantId::new();
    let event = user_created(tenant);
    assert!(event.traceparent.is_some(), "created inside a traced span");
    env.commit_event(&event).await;

    // The relay is woken by the commit's notification; no explicit run needed.
    let delivery = probe
        .next(Duration::from_secs(5))
        .await
        .expect("probe")
        .expect("event published");
    assert_eq!(delivery.routing_key.as_str(), "user.created");
    let props = &delivery.properties;
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/cloudevents+json")
    );
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        props.message_id().as_ref().map(|s| s.to_string()),
        Some(event.id.to_string())
    );
    assert_eq!(header(&delivery, "traceparent"), event.traceparent);
    assert_eq!(header(&delivery, "tenantid"), Some(tenant.to_string()));

    let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("json body");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["type"], "user.created");
    assert_eq!(body["source"], "crm/identity");
    assert_eq!(body["tenantid"], tenant.to_string());
    assert_eq!(body["data"]["entityType"], "user");
    let published: Event = serde_json::from_value(body).expect("envelope parses");
    assert_eq!(published, event);

    cancel.cancel();
    relay
        .await
        .expect("relay task")
        .expect("relay exits cleanly");

    let unpublished = env
        .admin_count(
            &format!(
                "SELECT count(*) AS n FROM {SCHEMA}.outbox WHERE id = $1 AND published_at IS NULL"
            ),
            event.id,
        )
        .await;
    assert_eq!(unpublished, 0, "the row is marked published");
    assert!(
        probe
            .next(Duration::from_millis(200))
            .await
            .expect("probe")
            .is_none(),
        "published once"
    );
}

#[tokio::test]
async fn rolled_back_change_is_never_published() {
    let env = TestEnv::new().await;
    let probe = env.probe("#").await;
    let cancel = CancellationToken::new();
    let relay = tokio::spawn(env.relay().run(cancel.clone()));

    let tenant = TenantId::new();
    let abandoned = user_created(tenant);
    let tx = env.db.tenant_tx(tenant).await.expect("tx");
    outbox::append(&tx, SCHEMA, &abandoned)
        .await
        .expect("append");
    tx.rollback().await.expect("rollback");

    // A later committed event proves the relay has looked at the outbox since.
    let committed = user_created(tenant);
    env.commit_event(&committed).await;
    let first = probe
        .next(Duration::from_secs(5))
        .await
        .expect("probe")
        .expect("committed event published");
    assert_eq!(
        first
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(committed.id.to_string())
    );
    assert!(
        probe
            .next(Duration::from_millis(300))
            .await
            .expect("probe")
            .is_none(),
        "nothing else published"
    );

    cancel.cancel();
    relay
        .await
        .expect("relay task")
        .expect("relay exits cleanly");
    let rows = env
        .admin_count(
            &format!("SELECT count(*) AS n FROM {SCHEMA}.outbox WHERE id = $1"),
            abandoned.id,
        )
        .await;
    assert_eq!(rows, 0, "the rolled-back event left no outbox row");
}

#[tokio::test]
async fn unroutable_event_is_still_marked_published() {
    let env = TestEnv::new().await;
    let event = user_created(TenantId::new());
    env.commit_event(&event).await;

    // Nothing is bound to the exchange: the broker returns the message.
    let mut relay = env.relay();
    assert_eq!(relay.run_once().await.expect("batch"), 1);
    assert_eq!(
        relay.run_once().await.expect("batch"),
        0,
        "not claimed again"
    );
    let unpublished = env
        .admin_count(
            &format!(
                "SELECT count(*) AS n FROM {SCHEMA}.outbox WHERE id = $1 AND published_at IS NULL"
            ),
            event.id,
        )
        .await;
    assert_eq!(unpublished, 0);
}

#[tokio::test]
async fn shutdown_flushes_committed_events() {
    let env = TestEnv::new().await;
    let probe = env.probe("#").await;
    let tenant = TenantId::new();
    let events: Vec<_> = (0..3).map(|_| user_created(tenant)).collect();
    for event in &events {
        env.commit_event(event).await;
    }
    // Cancelled before it starts: whatever is committed still goes out.
    let cancel = CancellationToken::new();
    cancel.cancel();
    env.relay().run(cancel).await.expect("relay exits cleanly");
    for event in &events {
        let delivery = probe
            .next(Duration::from_secs(2))
            .await
            .expect("probe")
            .expect("flushed");
        assert_eq!(
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
            Some(event.id.to_string()),
            "oldest first"
        );
    }
}

#[tokio::test]
async fn relay_reconnects_after_its_connection_is_dropped() {
    let env = TestEnv::new().await;
    let probe = env.probe("#").await;
    let cancel = CancellationToken::new();
    let relay = tokio::spawn(env.relay().run(cancel.clone()));
    let tenant = TenantId::new();

    let before = user_created(tenant);
    env.commit_event(&before).await;
    probe
        .next(Duration::from_secs(5))
        .await
        .expect("probe")
        .expect("first event published");

    let name = format!("{}relay-{SCHEMA}", env.bus.prefix);
    assert_eq!(
        close_connections_named(&name).await,
        1,
        "the relay's connection was found and closed"
    );

    let after = user_created(tenant);
    env.commit_event(&after).await;
    let delivery = probe
        .next(Duration::from_secs(10))
        .await
        .expect("probe")
        .expect("published after reconnecting");
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(after.id.to_string())
    );
    assert!(!relay.is_finished(), "the relay did not give up");
    cancel.cancel();
    relay
        .await
        .expect("relay task")
        .expect("relay exits cleanly");
}
