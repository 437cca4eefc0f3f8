//! Integration tests against the local PostgreSQL and RabbitMQ.

mod consumer;
mod helpers;
mod relay;
mod tenancy;
