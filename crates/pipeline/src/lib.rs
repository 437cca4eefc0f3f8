//! The pipeline service: pipelines and stages for deals and tickets, opportunities (with
//! custom fields defined in accounts-contacts), tickets, leads and the pipeline report, with
//! permissions from identity (crm.pipeline.v1).
//! `Application` builds and runs it; `crm up` and the `crm-pipeline` binary share it.

pub mod app;
pub mod consumer;
pub mod currency;
pub mod custom;
pub mod rules;
pub mod service;
pub mod store;

pub use app::{Application, Deps, Settings};
pub use service::Pipelines;
