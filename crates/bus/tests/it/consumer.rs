use std::time::Duration;

use crm_kit::ids::TenantId;
use lapin::{BasicProperties, options::BasicPublishOptions};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Behaviour, SCHEMA, TestEnv, TestHandler, close_connections_named, eventually, fast_options,
    user_created,
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn event_published_twice_is_processed_once() {
    let env = TestEnv::new().await;
    let handler = TestHandler::new(Behaviour::Record);
    let consumer = env.consumer("projector", &["user.*"], handler.clone(), fast_options());
    consumer.declare().await.expect("topology");
    let main_queue = consumer.queue().to_owned();
    let probe = env.probe("user.*").await;

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;

    // The first relay dies after the broker confirmed but before the row was marked.
    let mut crashed = env.relay();
    assert_eq!(
        crashed
            .publish_without_marking_for_test()
            .await
            .expect("publish"),
        1
    );
    drop(crashed);
    let mut restarted = env.relay();
    assert_eq!(restarted.run_once().await.expect("republish"), 1);
    assert_eq!(restarted.run_once().await.expect("nothing left"), 0);

    for copy in 0..2 {
        let delivery = probe.next(Duration::from_secs(2)).await.expect("probe");
        let delivery = delivery.unwrap_or_else(|| panic!("copy {copy} reached the exchange"));
        assert_eq!(
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
            Some(event.id.to_string())
        );
    }

    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));
    let (_conn, channel) = env.amqp().await;
    eventually("both copies consumed", WAIT, || async {
        env.effects(event.id).await == 1 && env.ready(&channel, &main_queue).await == 0
    })
    .await;
    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");

    assert_eq!(
        env.effects(event.id).await,
        1,
        "effect applied exactly once"
    );
    assert_eq!(
        handler.calls(),
        1,
        "the duplicate never reached the handler"
    );
    let processed = env
        .admin_count(
            &format!("SELECT count(*) AS n FROM {SCHEMA}.processed_events WHERE event_id = $1"),
            event.id,
        )
        .await;
    assert_eq!(processed, 1);

    // The handler ran inside the trace of the request that made the change.
    let traceparent = event.traceparent.as_deref().expect("traced event");
    let trace_id = traceparent.split('-').nth(1).expect("trace id");
    assert_eq!(
        handler.trace_ids.lock().expect("trace ids").as_slice(),
        [trace_id.to_owned()]
    );
}

#[tokio::test]
async fn poison_event_ends_in_dead_letter_queue_after_every_retry() {
    let env = TestEnv::new().await;
    let handler = TestHandler::new(Behaviour::FailTransient);
    let opts = fast_options();
    let tiers = opts.retry_delays.len();
    let consumer = env.consumer("poisoned", &["user.created"], handler.clone(), opts);
    let dlq = consumer.dead_letter_queue().to_owned();
    let cancel = CancellationToken::new();
    consumer.declare().await.expect("topology");
    let running = tokio::spawn(consumer.run(cancel.clone()));

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;
    env.relay().run_once().await.expect("publish");

    let (_conn, channel) = env.amqp().await;
    eventually("the event in the dead-letter queue", WAIT, || async {
        env.ready(&channel, &dlq).await == 1
    })
    .await;
    assert_eq!(
        handler.calls(),
        tiers + 1,
        "first try plus one per retry tier"
    );
    assert_eq!(
        env.effects(event.id).await,
        0,
        "failed attempts left no effect"
    );
    let processed = env
        .admin_count(
            &format!("SELECT count(*) AS n FROM {SCHEMA}.processed_events WHERE event_id = $1"),
            event.id,
        )
        .await;
    assert_eq!(
        processed, 0,
        "not marked processed, so a replay from the DLQ is handled"
    );

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
    let dead = channel
        .basic_get(
            dlq.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
        .expect("dead letter");
    let body: crm_bus::Event = serde_json::from_slice(&dead.delivery.data).expect("envelope");
    assert_eq!(body.id, event.id);
}

#[tokio::test]
async fn permanent_failures_and_garbage_skip_the_retries() {
    let env = TestEnv::new().await;
    let handler = TestHandler::new(Behaviour::FailPermanent);
    let consumer = env.consumer(
        "strict",
        &["user.*", "junk.*"],
        handler.clone(),
        fast_options(),
    );
    let dlq = consumer.dead_letter_queue().to_owned();
    consumer.declare().await.expect("topology");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;
    env.relay().run_once().await.expect("publish");
    let (_conn, channel) = env.amqp().await;
    channel
        .basic_publish(
            env.bus.exchange().into(),
            "junk.arrived".into(),
            BasicPublishOptions::default(),
            b"not an event",
            BasicProperties::default(),
        )
        .await
        .expect("publish garbage");

    eventually("both messages dead-lettered", WAIT, || async {
        env.ready(&channel, &dlq).await == 2
    })
    .await;
    assert_eq!(
        handler.calls(),
        1,
        "a permanent failure is not retried; garbage never reaches the handler"
    );

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
}

#[tokio::test]
async fn consumer_carries_on_after_its_connection_is_dropped() {
    let env = TestEnv::new().await;
    let handler = TestHandler::new(Behaviour::Record);
    let consumer = env.consumer("sturdy", &["user.*"], handler.clone(), fast_options());
    let cancel = CancellationToken::new();
    consumer.declare().await.expect("topology");
    let running = tokio::spawn(consumer.run(cancel.clone()));
    let tenant = TenantId::new();
    let mut relay = env.relay();

    let before = user_created(tenant);
    env.commit_event(&before).await;
    relay.run_once().await.expect("publish");
    eventually("the first event handled", WAIT, || async {
        env.effects(before.id).await == 1
    })
    .await;

    let name = format!("{}consumer-sturdy", env.bus.prefix);
    assert_eq!(
        close_connections_named(&name).await,
        1,
        "the consumer's connection was found and closed"
    );

    let after = user_created(tenant);
    env.commit_event(&after).await;
    relay.run_once().await.expect("publish");
    eventually(
        "the second event handled after reconnecting",
        WAIT,
        || async { env.effects(after.id).await == 1 },
    )
    .await;
    assert!(!running.is_finished(), "the consumer did not give up");

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
    assert_eq!(env.effects(before.id).await, 1);
}

#[tokio::test]
async fn shutdown_lets_the_handler_in_flight_finish() {
    let env = TestEnv::new().await;
    let handler = TestHandler::new(Behaviour::RecordSlowly(Duration::from_millis(500)));
    let consumer = env.consumer("patient", &["user.*"], handler.clone(), fast_options());
    let main_queue = consumer.queue().to_owned();
    consumer.declare().await.expect("topology");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;
    env.relay().run_once().await.expect("publish");
    eventually("the handler started", WAIT, || async {
        handler.calls() == 1
    })
    .await;

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
    assert_eq!(
        env.effects(event.id).await,
        1,
        "the in-flight handler committed"
    );
    let (_conn, channel) = env.amqp().await;
    assert_eq!(
        env.ready(&channel, &main_queue).await,
        0,
        "and its message was acknowledged"
    );
}
