//! Custom field values of opportunities: a JSONB object per record, validated by the service
//! against the tenant's "opportunity" definitions (kept by accounts-contacts), with a GIN
//! index for filters on them, as accounts and contacts have.
//!
//! Backward compatible: the column has a default, so the previous release's inserts, which
//! do not name it, still work.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_opportunity_custom"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A constant default adds the column without rewriting the table.
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE pipeline.opportunities ADD COLUMN IF NOT EXISTS custom jsonb NOT NULL DEFAULT '{}';
                 CREATE INDEX IF NOT EXISTS opportunities_custom ON pipeline.opportunities
                   USING gin (tenant_id, custom jsonb_path_ops) WHERE deleted_at IS NULL;",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP INDEX IF EXISTS pipeline.opportunities_custom;
                 ALTER TABLE pipeline.opportunities DROP COLUMN IF EXISTS custom;",
            )
            .await?;
        Ok(())
    }
}
