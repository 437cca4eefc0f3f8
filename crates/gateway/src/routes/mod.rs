//! REST routes, one module per API.md section.

pub mod identity;
pub mod webhooks;
