//! Generated gRPC and protobuf types for every CRM service.
//!
//! Nothing here is written by hand: `build.rs` compiles `/proto` at build time.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crm_descriptor.bin"));

pub mod crm {
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("crm.identity.v1");
        }
    }
    pub mod accounts {
        pub mod v1 {
            tonic::include_proto!("crm.accounts.v1");
        }
    }
    pub mod webhooks {
        pub mod v1 {
            tonic::include_proto!("crm.webhooks.v1");
        }
    }
    pub mod pipeline {
        pub mod v1 {
            tonic::include_proto!("crm.pipeline.v1");
        }
    }
    pub mod search {
        pub mod v1 {
            tonic::include_proto!("crm.search.v1");
        }
    }
    pub mod timeline {
        pub mod v1 {
            tonic::include_proto!("crm.timeline.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("crm.events.v1");
        }
    }
}

pub use crm::{
    accounts::v1 as accounts, events::v1 as events, identity::v1 as identity,
    pipeline::v1 as pipeline, search::v1 as search, timeline::v1 as timeline,
    webhooks::v1 as webhooks,
};
