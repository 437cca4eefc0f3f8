//! The API gateway: the partner REST API (`/api/v1`) over the services' gRPC APIs, with
//! authentication, tenant routing to cells, rate limits, idempotency keys, problem+json
//! errors and a generated OpenAPI 3.1 document.

pub mod app;
pub mod backends;
pub mod config;
pub mod dto;
pub mod error;
pub mod middleware;
pub mod routes;

pub use app::{Application, openapi_document};
pub use config::GatewaySettings;
