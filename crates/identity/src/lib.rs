//! The identity service: tenants, users, teams, roles with permissions, access and refresh
//! tokens, OAuth2 client credentials for partners, and security events (crm.identity.v1).
//! `Application` builds and runs it; `crm up` and the `crm-identity` binary share it.

pub mod app;
pub mod keys;
pub mod passwords;
pub mod permissions;
pub mod service;
pub mod store;
pub mod throttle;

pub use app::{Application, Deps, PUBLIC_METHODS};
pub use service::Identity;
