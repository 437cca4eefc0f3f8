//! Integration tests against the local PostgreSQL, and RabbitMQ or the in-process broker.

mod consumer;
mod helpers;
mod inprocess;
mod relay;
mod tenancy;
