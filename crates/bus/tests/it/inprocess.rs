//! The bus with the in-process broker instead of RabbitMQ, against the real PostgreSQL.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crm_bus::{
    BusConfig, Consumer, ConsumerOptions, Handler, InProcessBroker, Relay,
    inprocess::topic_matches, outbox,
};
use crm_kit::ids::TenantId;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Behaviour, SCHEMA, TestEnv, TestHandler, eventually, fast_options, user_created,
};

const WAIT: Duration = Duration::from_secs(10);

/// One broker for the whole test, as `crm up --embedded` shares one across services.
struct InProcess<'a> {
    env: &'a TestEnv,
    broker: InProcessBroker,
    bus: BusConfig,
}

impl<'a> InProcess<'a> {
    fn new(env: &'a TestEnv) -> Self {
        let broker = InProcessBroker::new();
        let bus = BusConfig::in_process(broker.clone(), env.bus.prefix.clone());
        Self { env, broker, bus }
    }

    fn relay(&self) -> Relay {
        Relay::new(self.env.db.clone(), SCHEMA, self.bus.clone())
    }

    fn consumer(
        &self,
        service: &str,
        bindings: &[&str],
        handler: Arc<dyn Handler>,
        opts: ConsumerOptions,
    ) -> Consumer {
        Consumer::new(
            self.env.db.clone(),
            SCHEMA,
            self.bus.clone(),
            service,
            bindings.iter().map(|b| b.to_string()).collect(),
            handler,
            opts,
        )
    }

    async fn unpublished(&self, event_id: uuid::Uuid) -> i64 {
        self.env
            .admin_count(
                &format!(
                    "SELECT count(*) AS n FROM {SCHEMA}.outbox WHERE id = $1 AND published_at IS NULL"
                ),
                event_id,
            )
            .await
    }

    async fn processed(&self, event_id: uuid::Uuid) -> i64 {
        self.env
            .admin_count(
                &format!("SELECT count(*) AS n FROM {SCHEMA}.processed_events WHERE event_id = $1"),
                event_id,
            )
            .await
    }
}

#[test]
fn topic_patterns_follow_amqp_semantics() {
    let cases = [
        ("a.*", "a.b", true),
        ("a.*", "a.b.c", false),
        ("a.*", "a", false),
        ("#", "a", true),
        ("#", "a.b.c", true),
        ("#", "", true),
        ("a.#", "a", true),
        ("a.#", "a.b", true),
        ("a.#", "a.b.c", true),
        ("a.#", "b.a", false),
        ("a.#", "ab.c", false),
        ("*.created", "user.created", true),
        ("*.created", "contact.created", true),
        ("*.created", "created", false),
        ("*.created", "crm.user.created", false),
        ("*.created", "user.updated", false),
        ("#.created", "crm.user.created", true),
        ("#.created", "created", true),
        ("a.#.c", "a.c", true),
        ("a.#.c", "a.b.b.c", true),
        ("a.#.c", "a.b.b", false),
        ("a.*.c", "a.c", false),
        ("*", "a", true),
        ("*", "a.b", false),
        ("*", "", false),
        ("#.#", "a.b", true),
        ("user.created", "user.created", true),
        ("user.created", "user.createdx", false),
    ];
    for (pattern, key, expected) in cases {
        assert_eq!(
            topic_matches(pattern, key),
            expected,
            "{pattern:?} against {key:?}"
        );
    }
}

#[tokio::test]
async fn committed_event_reaches_only_the_consumers_whose_pattern_matches() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let matching = TestHandler::new(Behaviour::Record);
    let wildcard = TestHandler::new(Behaviour::Record);
    let other = TestHandler::new(Behaviour::Record);
    let consumers = [
        bus.consumer("projector", &["user.*"], matching.clone(), fast_options()),
        bus.consumer("audit", &["*.created"], wildcard.clone(), fast_options()),
        bus.consumer(
            "sales",
            &["contact.#", "user.*.*"],
            other.clone(),
            fast_options(),
        ),
    ];
    let queues: Vec<String> = consumers.iter().map(|c| c.queue().to_owned()).collect();
    let cancel = CancellationToken::new();
    let mut running = Vec::new();
    for consumer in consumers {
        consumer.declare().await.expect("declare in process");
        running.push(tokio::spawn(consumer.run(cancel.clone())));
    }
    let relay = tokio::spawn(bus.relay().run(cancel.clone()));

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;

    // The relay is woken by the commit's notification; no explicit run needed.
    eventually("both matching consumers handled it", WAIT, || async {
        env.effects(event.id).await == 2 && queues.iter().all(|q| bus.broker.pending(q) == 0)
    })
    .await;
    assert_eq!(matching.calls(), 1);
    assert_eq!(wildcard.calls(), 1);
    assert_eq!(other.calls(), 0, "no pattern of its queue matches");
    assert_eq!(bus.processed(event.id).await, 2, "one marker per service");
    assert_eq!(
        bus.unpublished(event.id).await,
        0,
        "the row is marked published"
    );

    // The handler ran inside the trace of the request that made the change.
    let traceparent = event.traceparent.as_deref().expect("traced event");
    let trace_id = traceparent.split('-').nth(1).expect("trace id");
    assert_eq!(
        matching.trace_ids.lock().expect("trace ids").as_slice(),
        [trace_id.to_owned()]
    );

    cancel.cancel();
    relay
        .await
        .expect("relay task")
        .expect("relay exits cleanly");
    for consumer in running {
        consumer
            .await
            .expect("consumer task")
            .expect("consumer exits cleanly");
    }
}

#[tokio::test]
async fn rolled_back_event_never_reaches_a_consumer() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let handler = TestHandler::new(Behaviour::Record);
    let consumer = bus.consumer("everything", &["#"], handler.clone(), fast_options());
    let queue = consumer.queue().to_owned();
    consumer.declare().await.expect("declare in process");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));
    let relay = tokio::spawn(bus.relay().run(cancel.clone()));

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
    eventually("the committed event handled", WAIT, || async {
        env.effects(committed.id).await == 1 && bus.broker.pending(&queue) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.calls(), 1, "nothing else was delivered");
    assert_eq!(env.effects(abandoned.id).await, 0);

    cancel.cancel();
    relay
        .await
        .expect("relay task")
        .expect("relay exits cleanly");
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
    let rows = env
        .admin_count(
            &format!("SELECT count(*) AS n FROM {SCHEMA}.outbox WHERE id = $1"),
            abandoned.id,
        )
        .await;
    assert_eq!(rows, 0, "the rolled-back event left no outbox row");
}

#[tokio::test]
async fn event_published_twice_is_handled_once() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let handler = TestHandler::new(Behaviour::Record);
    let consumer = bus.consumer("projector", &["user.*"], handler.clone(), fast_options());
    let queue = consumer.queue().to_owned();
    consumer.declare().await.expect("declare in process");

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;

    // The first relay dies after the broker took the event but before the row was marked.
    let mut crashed = bus.relay();
    assert_eq!(
        crashed
            .publish_without_marking_for_test()
            .await
            .expect("publish"),
        1
    );
    drop(crashed);
    assert_eq!(bus.unpublished(event.id).await, 1, "not marked");
    let mut restarted = bus.relay();
    assert_eq!(restarted.run_once().await.expect("republish"), 1);
    assert_eq!(restarted.run_once().await.expect("nothing left"), 0);
    assert_eq!(bus.broker.pending(&queue), 2, "both copies queued");

    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));
    eventually("both copies consumed", WAIT, || async {
        env.effects(event.id).await == 1 && bus.broker.pending(&queue) == 0
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
    assert_eq!(bus.processed(event.id).await, 1);
    assert_eq!(bus.unpublished(event.id).await, 0);
}

#[tokio::test]
async fn poison_event_ends_in_the_dead_letters_after_every_tier() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let handler = TestHandler::new(Behaviour::FailTransient);
    let opts = fast_options();
    let tiers = opts.retry_delays.len();
    let total_delay: Duration = opts.retry_delays.iter().sum();
    let consumer = bus.consumer("poisoned", &["user.created"], handler.clone(), opts);
    let queue = consumer.queue().to_owned();
    let dlq = consumer.dead_letter_queue().to_owned();
    consumer.declare().await.expect("declare in process");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;
    let published_at = Instant::now();
    assert_eq!(bus.relay().run_once().await.expect("publish"), 1);

    eventually("the event in the dead letters", WAIT, || async {
        bus.broker.dead_letters(&dlq).len() == 1
    })
    .await;
    assert!(
        published_at.elapsed() >= total_delay,
        "every tier waited out its delay"
    );
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
    assert_eq!(
        bus.processed(event.id).await,
        0,
        "not marked processed, so a replay of the dead letter is handled"
    );
    assert_eq!(bus.broker.pending(&queue), 0, "settled");

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
    let dead = bus.broker.dead_letters(&dlq);
    assert_eq!(dead[0].reason, "exhausted");
    assert_eq!(dead[0].attempts, tiers);
    assert_eq!(dead[0].routing_key, "user.created");
    assert_eq!(dead[0].event().expect("envelope").id, event.id);
}

#[tokio::test]
async fn permanent_failure_skips_the_retries() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let handler = TestHandler::new(Behaviour::FailPermanent);
    let consumer = bus.consumer("strict", &["user.*"], handler.clone(), fast_options());
    let dlq = consumer.dead_letter_queue().to_owned();
    consumer.declare().await.expect("declare in process");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));

    let event = user_created(TenantId::new());
    env.commit_event(&event).await;
    bus.relay().run_once().await.expect("publish");
    eventually("the event dead-lettered", WAIT, || async {
        bus.broker.dead_letters(&dlq).len() == 1
    })
    .await;
    assert_eq!(handler.calls(), 1, "a permanent failure is not retried");
    assert_eq!(bus.broker.dead_letters(&dlq)[0].reason, "permanent");

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
}

#[tokio::test]
async fn event_published_before_any_queue_is_bound_is_dropped() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let event = user_created(TenantId::new());
    env.commit_event(&event).await;
    let mut relay = bus.relay();
    assert_eq!(relay.run_once().await.expect("batch"), 1);
    assert_eq!(
        relay.run_once().await.expect("batch"),
        0,
        "not claimed again"
    );
    assert_eq!(bus.unpublished(event.id).await, 0, "marked published");

    // A queue declared afterwards starts from what is published from then on.
    let handler = TestHandler::new(Behaviour::Record);
    let consumer = bus.consumer("late", &["#"], handler.clone(), fast_options());
    let queue = consumer.queue().to_owned();
    consumer.declare().await.expect("declare in process");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(consumer.run(cancel.clone()));
    let later = user_created(TenantId::new());
    env.commit_event(&later).await;
    relay.run_once().await.expect("publish");
    eventually("the later event handled", WAIT, || async {
        env.effects(later.id).await == 1 && bus.broker.pending(&queue) == 0
    })
    .await;
    assert_eq!(handler.calls(), 1);
    assert_eq!(
        env.effects(event.id).await,
        0,
        "the early event was dropped"
    );

    cancel.cancel();
    running
        .await
        .expect("consumer task")
        .expect("consumer exits cleanly");
}

#[tokio::test]
async fn brokers_and_prefixes_keep_buses_apart() {
    let env = TestEnv::new().await;
    let bus = InProcess::new(&env);
    let handler = TestHandler::new(Behaviour::Record);
    let neighbour = BusConfig::in_process(bus.broker.clone(), "elsewhere.");
    let consumer = Consumer::new(
        env.db.clone(),
        SCHEMA,
        neighbour,
        "projector",
        vec!["#".into()],
        handler.clone(),
        fast_options(),
    );
    consumer.declare().await.expect("declare in process");
    let strangers = InProcess::new(&env);
    let stranger_consumer =
        strangers.consumer("projector", &["#"], handler.clone(), fast_options());
    stranger_consumer
        .declare()
        .await
        .expect("declare in process");

    env.commit_event(&user_created(TenantId::new())).await;
    bus.relay().run_once().await.expect("publish");
    assert_eq!(bus.broker.pending(consumer.queue()), 0, "other prefix");
    assert_eq!(
        strangers.broker.pending(stranger_consumer.queue()),
        0,
        "other broker"
    );
}
