//! The search service: a tenant-scoped index of CRM records in its own schema, fed by the
//! owning services' events and rebuilt from them on demand, queried with permissions applied
//! (crm.search.v1). `Application` builds and runs it; `crm up` and `crm-search` share it.

pub mod app;
pub mod consumer;
pub mod index;
pub mod kinds;
pub mod score;
pub mod service;

pub use app::{Application, Deps};
pub use service::Search;
