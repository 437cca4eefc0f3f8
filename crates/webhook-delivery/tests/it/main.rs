//! Integration tests of the webhook delivery service: real PostgreSQL, RabbitMQ, Redis, the
//! identity service and gateway, and a real local HTTP receiver.

mod drain;
mod helpers;
mod inbound;
mod outbound;
mod signatures;
mod tenancy;
