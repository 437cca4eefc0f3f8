//! End-to-end tests of accounts and contacts: REST against the gateway, which calls
//! accounts-contacts and identity over gRPC, against the local PostgreSQL and Redis.

mod access;
mod grpc;
mod helpers;
mod lists;
mod records;
