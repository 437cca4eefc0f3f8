//! The search schema: the tenant-scoped index of CRM records.

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_candidates;

/// Migrates the `search` schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_search").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_candidates::Migration),
        ]
    }
}
