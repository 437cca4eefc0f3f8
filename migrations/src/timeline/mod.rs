//! The timeline schema: activities, per-record timelines, the projections that feed them,
//! and the append-only audit log.

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_drop_records;

/// Migrates the `timeline` schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_timeline").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_drop_records::Migration),
        ]
    }
}
