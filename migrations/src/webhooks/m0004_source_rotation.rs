//! Inbound sources get a version (for etags) and a previous secret that is still accepted
//! for a while after a rotation, as endpoints have.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_source_rotation"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE webhooks.inbound_sources
                     ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1,
                     ADD COLUMN IF NOT EXISTS previous_secret_enc bytea,
                     ADD COLUMN IF NOT EXISTS previous_secret_nonce bytea,
                     ADD COLUMN IF NOT EXISTS previous_secret_expires_at timestamptz;",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE webhooks.inbound_sources
                     DROP COLUMN IF EXISTS version,
                     DROP COLUMN IF EXISTS previous_secret_enc,
                     DROP COLUMN IF EXISTS previous_secret_nonce,
                     DROP COLUMN IF EXISTS previous_secret_expires_at;",
            )
            .await?;
        Ok(())
    }
}
