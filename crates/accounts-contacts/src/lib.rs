//! The accounts and contacts service: accounts, contacts, the links between them and
//! per-tenant custom fields, with permissions from identity (crm.accounts.v1).
//! `Application` builds and runs it; `crm up` and the `crm-accounts-contacts` binary share it.

/// Permissions, and the AIP-160 filters of lists, live in crm-kit so every service reads them
/// the same way.
pub use crm_kit::{access, filter};
pub mod app;
pub mod custom;
pub mod service;
pub mod store;

pub use app::{Application, Deps};
pub use service::Accounts;
