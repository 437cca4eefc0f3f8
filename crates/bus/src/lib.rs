//! The CRM event bus: the CloudEvents envelope services publish, the transactional
//! outbox and the relay that moves it to the broker, and the consumer runner with
//! idempotent handling, retry tiers and dead letters.
//!
//! The broker is RabbitMQ, or an [`InProcessBroker`] when every service runs in one process.

mod amqp;
mod config;
pub mod consumer;
mod error;
mod event;
pub mod inprocess;
pub mod outage;
pub mod outbox;
pub mod probe;
pub mod relay;
mod trace;

pub use config::BusConfig;
pub use consumer::{Consumer, ConsumerOptions, Handler, HandlerError};
pub use error::BusError;
pub use event::{Event, EventData};
pub use inprocess::InProcessBroker;
pub use probe::Probe;
pub use relay::Relay;
