//! A page of `webhooks.deliveries` keeps half of itself free, where it kept a fifth. The
//! record rewrites each delivery it settles, and the new version stays on the row's page
//! (a HOT update: no new entry in any of the table's four indexes) only where the page has
//! room for it. A worker's claims take deliveries in the order they were queued, which is
//! the order they lie on the pages, so a record settles most rows of a page at once: a
//! fifth of a page held the new versions of about three of its thirteen rows, and the
//! others went to other pages with an entry in every index (41 % of the updates stayed
//! on their page in a run of the benchmark). Half a page holds all of them: every update
//! of a run with it stayed on its page, and a record of 128 tries took about 4.3 ms where
//! it took 5.4 ms. The table takes about 30 % more room for the same rows (98 MB against
//! 76 MB for 100,000 deliveries). Only pages filled from now on keep the room; rows
//! already stored stay where they are.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0013_room_for_every_record"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    // Setting the fill factor takes a lock that lets reads and writes of the table go on.
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(
            manager,
            "ALTER TABLE webhooks.deliveries SET (fillfactor = 50);",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // As m0006 left it.
        super::execute(
            manager,
            "ALTER TABLE webhooks.deliveries SET (fillfactor = 80);",
        )
        .await
    }
}
