//! End-to-end tests of search: records are written through the gateway to accounts-contacts,
//! whose events travel over the real RabbitMQ to the search service's consumer; queries go
//! through the gateway again. Local PostgreSQL, RabbitMQ and Redis.

mod events;
mod helpers;
mod search;
