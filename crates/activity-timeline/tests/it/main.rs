//! End-to-end tests of activities, timelines and the audit log: REST against the gateway,
//! which calls activity-timeline, accounts-contacts and identity over gRPC, with events
//! flowing through the local RabbitMQ into the timeline consumer.

mod activities;
mod audit;
mod helpers;
mod timeline;
