//! The activity and timeline service: activities (calls, e-mails, meetings, notes, tasks)
//! about CRM records, one timeline per record built from every domain event, and the
//! append-only audit log (crm.timeline.v1). `Application` builds and runs it.

pub mod app;
pub mod consumer;
pub mod csv;
pub mod service;
pub mod store;
pub mod subjects;

pub use app::{Application, Deps, Settings};
pub use service::Timeline;
