//! The pipeline schema: pipelines and stages, opportunities (with their custom field values),
//! tickets, leads, stage history and the projection of account names.

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_opportunity_custom;
mod m0003_report_owner;

/// Migrates the `pipeline` schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_pipeline").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_opportunity_custom::Migration),
            Box::new(m0003_report_owner::Migration),
        ]
    }
}
