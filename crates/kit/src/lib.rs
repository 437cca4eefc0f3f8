//! What every CRM service shares: configuration, telemetry, the error-code table, access-token
//! verification, tenant-scoped transactions, the cache, the server bootstrap, custom-field
//! validation and AIP-160 filters. Services build on these; nothing here knows about a
//! particular service.

pub mod access;
pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod custom;
pub mod db;
pub mod error;
pub mod filter;
pub mod idempotency;
pub mod ids;
pub mod paging;
pub mod rpc;
pub mod server;
pub mod telemetry;

pub use auth::{Caller, TokenVerifier};
pub use cache::Cache;
pub use config::Config;
pub use db::{Db, TenantTx};
pub use error::{ApiError, ApiResult, ErrorCode};
pub use ids::{TeamId, TenantId, UserId};
