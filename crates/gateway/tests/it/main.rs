//! End-to-end tests of the partner REST API: HTTP against the gateway, which calls identity
//! over gRPC, against the local PostgreSQL and Redis.

mod auth;
mod conventions;
mod helpers;
mod limits;
mod tenancy;
