//! An in-process stand-in for RabbitMQ, so one process with only PostgreSQL runs the whole bus.
//!
//! It emulates what the relay and the consumers rely on: topic exchanges routing by AMQP
//! topic patterns, per-service queues (tokio channels) that consumers attach to, retry tiers
//! whose delays are timers, and a dead-letter list per service. A message published while
//! no queue is bound for its routing key is dropped, as RabbitMQ drops unroutable messages.
//!
//! Queues live in memory: what they hold when the process stops is gone. The outbox rows
//! remain the record of every committed event.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use crate::Event;

/// Whether `routing_key` matches the binding `pattern` with AMQP topic semantics.
///
/// Both are dot-separated words; in the pattern `*` stands for exactly one word and `#` for
/// zero or more words. `a.*` matches `a.b` but not `a.b.c`; `a.#` matches `a`, `a.b` and
/// `a.b.c`; `#` matches every key.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(routing_key);
    // matched[j]: the pattern words seen so far match the first j words of the key.
    let mut matched = vec![false; key.len() + 1];
    matched[0] = true;
    for p in pattern {
        let mut next = vec![false; key.len() + 1];
        for j in 0..=key.len() {
            next[j] = match p {
                "#" => matched[j] || (j > 0 && next[j - 1]),
                "*" => j > 0 && matched[j - 1],
                word => j > 0 && matched[j - 1] && key[j - 1] == word,
            };
        }
        matched = next;
    }
    matched[key.len()]
}

/// The words of a routing key or pattern; the empty string has none.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// Topic exchanges and service queues inside this process.
///
/// Clones share one broker: give every relay and consumer of the process a clone (through
/// [`BusConfig::in_process`](crate::BusConfig::in_process)) and events flow between them
/// as they would through RabbitMQ.
#[derive(Clone, Default)]
pub struct InProcessBroker {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Arc<Queue>>,
    bindings: Vec<Binding>,
    dead_letters: HashMap<String, Vec<DeadLetter>>,
}

struct Binding {
    exchange: String,
    pattern: String,
    queue: Arc<Queue>,
}

/// A message that ended in a service's dead-letter list.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The routing key it was published with (the event type).
    pub routing_key: String,
    /// The message body: a CloudEvents envelope, unless the message was unparseable.
    pub body: Vec<u8>,
    /// How many retry tiers it went through.
    pub attempts: usize,
    /// Why it was dead-lettered: `permanent`, `exhausted`, `unparseable` or `delivery-limit`.
    pub reason: &'static str,
}

impl DeadLetter {
    /// The event the message carried.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A message in an in-process queue.
#[derive(Clone, Debug, Default)]
pub(crate) struct Message {
    pub(crate) routing_key: String,
    pub(crate) body: Arc<[u8]>,
    pub(crate) traceparent: Option<String>,
    /// Retry tiers passed, like the attempts header of the AMQP transport.
    pub(crate) attempts: usize,
    /// Times it went back to the queue unsettled, like the AMQP delivery count.
    redeliveries: u32,
}

impl Message {
    pub(crate) fn new(routing_key: &str, body: Vec<u8>, traceparent: Option<String>) -> Self {
        Self {
            routing_key: routing_key.to_owned(),
            body: body.into(),
            traceparent,
            attempts: 0,
            redeliveries: 0,
        }
    }
}

/// One service's queue.
pub(crate) struct Queue {
    dead_letter_queue: String,
    delivery_limit: u32,
    sender: mpsc::UnboundedSender<Message>,
    /// Consumers attached to the queue take turns receiving, like competing AMQP consumers.
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    /// Messages routed here and neither acknowledged nor dead-lettered yet.
    pending: AtomicUsize,
}

impl Queue {
    fn push(&self, message: Message) {
        // The queue owns its receiver, so sending cannot fail while the queue exists.
        let _ = self.sender.send(message);
    }

    fn settled(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InProcessBroker {
    /// An empty broker: no queues, so nothing is routed until a consumer declares one.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages dead-lettered so far by the service whose dead-letter queue is named
    /// `dead_letter_queue` (see [`Consumer::dead_letter_queue`](crate::Consumer::dead_letter_queue)),
    /// oldest first.
    pub fn dead_letters(&self, dead_letter_queue: &str) -> Vec<DeadLetter> {
        self.lock()
            .dead_letters
            .get(dead_letter_queue)
            .cloned()
            .unwrap_or_default()
    }

    /// Messages routed to `queue` that are neither acknowledged nor dead-lettered: waiting,
    /// being handled, or waiting out a retry delay. Zero for a queue that does not exist.
    pub fn pending(&self, queue: &str) -> usize {
        self.lock()
            .queues
            .get(queue)
            .map_or(0, |q| q.pending.load(Ordering::SeqCst))
    }

    /// Creates `queue` if it does not exist and binds it to `exchange` with each pattern.
    ///
    /// Like AMQP declarations, repeating it is harmless and bindings only accumulate.
    pub(crate) fn declare_queue(
        &self,
        exchange: &str,
        queue: &str,
        dead_letter_queue: &str,
        delivery_limit: u32,
        patterns: &[String],
    ) -> Arc<Queue> {
        let mut state = self.lock();
        let declared = Arc::clone(state.queues.entry(queue.to_owned()).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            Arc::new(Queue {
                dead_letter_queue: dead_letter_queue.to_owned(),
                delivery_limit,
                sender,
                receiver: tokio::sync::Mutex::new(receiver),
                pending: AtomicUsize::new(0),
            })
        }));
        for pattern in patterns {
            let bound = state.bindings.iter().any(|b| {
                b.exchange == exchange && b.pattern == *pattern && Arc::ptr_eq(&b.queue, &declared)
            });
            if !bound {
                state.bindings.push(Binding {
                    exchange: exchange.to_owned(),
                    pattern: pattern.clone(),
                    queue: Arc::clone(&declared),
                });
            }
        }
        declared
    }

    /// Routes a copy of `message` to every queue bound to `exchange` with a matching pattern
    /// (one copy per queue however many of its patterns match); returns how many queues got one.
    pub(crate) fn publish(&self, exchange: &str, message: &Message) -> usize {
        let state = self.lock();
        let mut routed: Vec<&Arc<Queue>> = Vec::new();
        for binding in &state.bindings {
            if binding.exchange == exchange
                && topic_matches(&binding.pattern, &message.routing_key)
                && !routed.iter().any(|q| Arc::ptr_eq(q, &binding.queue))
            {
                routed.push(&binding.queue);
            }
        }
        for queue in &routed {
            queue.pending.fetch_add(1, Ordering::SeqCst);
            queue.push(message.clone());
        }
        routed.len()
    }

    /// The next message of `queue`, waiting for one. Cancel-safe.
    ///
    /// A message that went back to the queue unsettled more often than the queue's delivery
    /// limit is dead-lettered instead of delivered again.
    pub(crate) async fn receive(&self, queue: &Arc<Queue>) -> Option<Delivery> {
        loop {
            let message = queue.receiver.lock().await.recv().await?;
            if message.redeliveries > queue.delivery_limit {
                tracing::warn!(
                    routing_key = %message.routing_key,
                    dead_letter_queue = %queue.dead_letter_queue,
                    "delivery limit reached; dead-lettering"
                );
                self.dead_letter(queue, message, "delivery-limit");
                continue;
            }
            return Some(Delivery {
                broker: self.clone(),
                queue: Arc::clone(queue),
                message,
                settled: false,
            });
        }
    }

    fn dead_letter(&self, queue: &Queue, message: Message, reason: &'static str) {
        self.lock()
            .dead_letters
            .entry(queue.dead_letter_queue.clone())
            .or_default()
            .push(DeadLetter {
                routing_key: message.routing_key,
                body: message.body.to_vec(),
                attempts: message.attempts,
                reason,
            });
        queue.settled();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a panic elsewhere is no reason to stop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for InProcessBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        let mut queues: Vec<&str> = state.queues.keys().map(String::as_str).collect();
        queues.sort_unstable();
        f.debug_struct("InProcessBroker")
            .field("queues", &queues)
            .finish()
    }
}

/// A message handed to a consumer. Settle it once; dropped unsettled, it goes back to its
/// queue, as an unacknowledged AMQP message does when its channel closes.
pub(crate) struct Delivery {
    broker: InProcessBroker,
    queue: Arc<Queue>,
    message: Message,
    settled: bool,
}

impl Delivery {
    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

    /// Done with: the message leaves the queue.
    pub(crate) fn ack(mut self) {
        self.settled = true;
        self.queue.settled();
    }

    /// Back to the queue after `delay`, counted as one more retry tier.
    pub(crate) fn retry(mut self, delay: Duration) {
        self.settled = true;
        let mut message = std::mem::take(&mut self.message);
        message.attempts += 1;
        let queue = Arc::clone(&self.queue);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(message);
        });
    }

    /// To the service's dead-letter list.
    pub(crate) fn dead_letter(mut self, reason: &'static str) {
        self.settled = true;
        let message = std::mem::take(&mut self.message);
        self.broker.dead_letter(&self.queue, message, reason);
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.settled {
            let mut message = std::mem::take(&mut self.message);
            message.redeliveries += 1;
            self.queue.push(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str) -> Message {
        Message::new(key, b"{}".to_vec(), None)
    }

    #[tokio::test]
    async fn routes_once_per_queue_and_drops_the_unroutable() {
        let broker = InProcessBroker::new();
        let patterns = ["user.*".to_owned(), "#".to_owned()];
        let queue = broker.declare_queue("x", "q", "q.dlq", 10, &patterns);
        broker.declare_queue("x", "q", "q.dlq", 10, &patterns);
        assert_eq!(broker.publish("x", &message("user.created")), 1);
        assert_eq!(broker.publish("other", &message("user.created")), 0);
        assert_eq!(broker.pending("q"), 1);
        let delivery = broker.receive(&queue).await.expect("a message");
        assert_eq!(delivery.message().routing_key, "user.created");
        delivery.ack();
        assert_eq!(broker.pending("q"), 0);
        assert_eq!(broker.pending("missing"), 0);
    }

    #[tokio::test]
    async fn unsettled_messages_return_until_the_delivery_limit() {
        let broker = InProcessBroker::new();
        let queue = broker.declare_queue("x", "q", "q.dlq", 1, &["#".to_owned()]);
        broker.publish("x", &message("a"));
        for _ in 0..2 {
            drop(broker.receive(&queue).await.expect("redelivered"));
        }
        assert_eq!(broker.pending("q"), 1);
        broker.publish("x", &message("b"));
        let next = broker.receive(&queue).await.expect("the next message");
        assert_eq!(next.message().routing_key, "b");
        next.ack();
        let dead = broker.dead_letters("q.dlq");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "delivery-limit");
        assert_eq!(broker.pending("q"), 0);
    }
}
