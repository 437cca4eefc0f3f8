//! Integration tests of the identity service against the local PostgreSQL, Redis and RabbitMQ.

mod api_clients;
mod events;
mod helpers;
mod idempotency;
mod login;
mod ops;
mod paging;
mod permissions;
mod tenancy;
mod tokens;
mod validation;
