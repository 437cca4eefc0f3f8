//! The pipeline report of one owner (`ownerUserId`, or a role scoped to its own or its team's
//! records) reads its rows from an index that leads with the owner.
//!
//! `opportunities_report` leads with the close date, so an owner's report read the owner
//! index and then nearly every heap page: for one owner of eight over 500,000 opportunities,
//! 106 ms against 42 ms through this index (docs/benchmarks.md, `pipeline`).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_report_owner"
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
                "CREATE INDEX IF NOT EXISTS opportunities_report_owner ON pipeline.opportunities \
                   (tenant_id, pipeline_id, owner_user_id, close_date) \
                   INCLUDE (stage, currency, amount_cents, created_at) WHERE deleted_at IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS pipeline.opportunities_report_owner")
            .await?;
        Ok(())
    }
}
