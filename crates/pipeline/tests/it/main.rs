//! End-to-end tests of the pipeline service: REST against the gateway, which calls pipeline,
//! accounts-contacts and identity over gRPC, against the local PostgreSQL, Redis and RabbitMQ.

mod access;
mod custom;
mod helpers;
mod leads;
mod records;
mod reports;
mod rules;
