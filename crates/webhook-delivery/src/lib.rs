//! The webhook delivery service (crm.webhooks.v1): outbound webhooks following Standard
//! Webhooks — signed, retried from PostgreSQL, recorded, guarded against SSRF — and inbound
//! signed webhooks. `Application` builds and runs it; `crm up` and `crm-webhook-delivery` share it.

pub mod app;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod fanout;
pub mod service;
pub mod ssrf;
pub mod store;
pub mod worker;

pub use app::{Application, Deps, PUBLIC_METHODS};
pub use config::WebhookSettings;
pub use service::Webhooks;
