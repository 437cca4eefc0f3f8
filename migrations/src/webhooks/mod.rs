//! The webhooks schema.

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_claim_index_scans;
mod m0003_batched_delivery;
mod m0004_source_rotation;
mod m0005_lease_table;
mod m0006_delivery_queue;
mod m0007_claim_past_backlogs;
mod m0008_claim_full_batches_in_order;
mod m0009_record_through_the_key;
mod m0010_record_from_arrays;
mod m0011_claim_returns_what_it_leased;
mod m0012_record_through_the_delete;
mod m0013_room_for_every_record;
mod m0014_claim_reads_free_rows;
mod m0015_attempts_checked_by_the_record;

/// `earlier` (the text of an applied migration) with `from` replaced by `to`: how a later
/// migration states a change to a function without copying the rest of it. `from` must
/// stand in it exactly once, so that a change never lands in a place it does not name.
fn amended(earlier: &str, from: &str, to: &str) -> String {
    assert_eq!(
        earlier.matches(from).count(),
        1,
        "the earlier text has the part to replace, once: {from}"
    );
    earlier.replace(from, to)
}

/// Runs the SQL of a migration step (one or more statements).
async fn execute(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

/// Migrates the `webhooks` schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_webhooks").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_claim_index_scans::Migration),
            Box::new(m0003_batched_delivery::Migration),
            Box::new(m0004_source_rotation::Migration),
            Box::new(m0005_lease_table::Migration),
            Box::new(m0006_delivery_queue::Migration),
            Box::new(m0007_claim_past_backlogs::Migration),
            Box::new(m0008_claim_full_batches_in_order::Migration),
            Box::new(m0009_record_through_the_key::Migration),
            Box::new(m0010_record_from_arrays::Migration),
            Box::new(m0011_claim_returns_what_it_leased::Migration),
            Box::new(m0012_record_through_the_delete::Migration),
            Box::new(m0013_room_for_every_record::Migration),
            Box::new(m0014_claim_reads_free_rows::Migration),
            Box::new(m0015_attempts_checked_by_the_record::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_amendment_replaces_the_one_place_it_names() {
        assert_eq!(
            super::amended("a := 1; b := 2", "b := 2", "b := 3"),
            "a := 1; b := 3"
        );
    }

    #[test]
    #[should_panic(expected = "once")]
    fn an_amendment_of_a_part_that_stands_twice_is_refused() {
        super::amended("x := 1; x := 1", "x := 1", "x := 2");
    }
}
