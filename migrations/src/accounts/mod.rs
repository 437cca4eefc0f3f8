//! The accounts schema: accounts, contacts, their links and custom field definitions.

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_text_matches;
mod m0003_custom_sort;

/// Migrates the `accounts` schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_accounts").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_text_matches::Migration),
            Box::new(m0003_custom_sort::Migration),
        ]
    }
}
