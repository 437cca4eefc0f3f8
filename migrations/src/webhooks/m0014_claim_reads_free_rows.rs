//! A claim reads only free rows of the queue. Before, its scan in due order went through
//! every row at the head of the queue, leased or not: under a steady load the head is the
//! rows in flight and those waiting for their record, a thousand or more, and the scan read
//! each of them (index entry and row) before it reached a free one. Now free rows have an
//! index of their own (`queue_free`, by due time, only rows without a lease), and so has
//! the way past a backlog (`queue_free_lanes`, by endpoint and due time). The indexes of
//! all rows by due time (`queue_due`) and by endpoint (`queue_lanes`) go.
//!
//! A row whose lease ran out (its worker is gone) is not in those indexes: each claim first
//! frees such rows, found by the time their lease runs out (`queue_held`, only leased
//! rows), and then reads them with the other free rows, at the due time they had. Once a
//! row is freed, the worker that held it can no longer record its try, as before once
//! another worker had taken the row.
//!
//! The price: taking or giving back a lease now changes what the indexes hold, so its
//! update of the row can no longer stay on the row's page without new index entries (the
//! lease adds one to the primary key and one to `queue_held`).

use sea_orm_migration::prelude::*;

use super::{m0006_delivery_queue, m0011_claim_returns_what_it_leased};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0014_claim_reads_free_rows"
    }
}

/// The claim's first step, and this one's: rows whose lease ran out are freed (rows
/// another claim is freeing meanwhile are left to it), then candidates are read.
const CANDIDATES: &str = "BEGIN
    -- Candidates in due order: free rows of endpoints with room, from at most `scan_budget`
    -- due rows";
const FREED_THEN_CANDIDATES: &str = "BEGIN
    -- Rows whose lease ran out are free again, due when they were.
    UPDATE webhooks.queue q SET worker = NULL, lease_until = NULL
     WHERE q.ctid = ANY (ARRAY(SELECT r.ctid FROM webhooks.queue r
                                WHERE r.lease_until <= now()
                                  FOR NO KEY UPDATE SKIP LOCKED));
    -- Candidates in due order: rows of endpoints with room, from at most `scan_budget`
    -- free due rows";

/// The claim's scan in due order, in m0011's claim and in this one's.
const SCAN_ALL: &str = "                 WHERE q.at <= now()
                 ORDER BY q.at
                 LIMIT scan_budget) s";
const SCAN_FREE: &str = "                 WHERE q.lease_until IS NULL AND q.at <= now()
                 ORDER BY q.at
                 LIMIT scan_budget) s";

/// The scan's count of the rows it read runs row by row. Counted over a range, each row
/// would wait for every row due at the same time as it (its peers), so the scan would read
/// its whole budget wherever a burst of deliveries shares one due time (all that one
/// transaction queues), however few rows the claim needs.
const COUNT_OVER_PEERS: &str = "row_number() OVER (ORDER BY s.at) AS rn";
const COUNT_BY_ROW: &str = "row_number() OVER (ORDER BY s.at ROWS UNBOUNDED PRECEDING) AS rn";

/// The way past a backlog goes through the free rows' lanes: the first endpoint, the next
/// one, and each endpoint's first due rows.
const FIRST_LANE: &str =
    "(SELECT q.endpoint_id FROM webhooks.queue q ORDER BY q.endpoint_id LIMIT 1)";
const FIRST_FREE_LANE: &str = "(SELECT q.endpoint_id FROM webhooks.queue q
              WHERE q.lease_until IS NULL ORDER BY q.endpoint_id LIMIT 1)";
const NEXT_LANE: &str = "WHERE q.endpoint_id > l.endpoint_id ORDER BY q.endpoint_id LIMIT 1)";
const NEXT_FREE_LANE: &str = "WHERE q.lease_until IS NULL AND q.endpoint_id > l.endpoint_id
                     ORDER BY q.endpoint_id LIMIT 1)";
const LANE_ROWS: &str = "AND (q.lease_until IS NULL OR q.lease_until <= now())";
const FREE_LANE_ROWS: &str = "AND q.lease_until IS NULL";
const WHY_LANES: &str =
    "    -- limit, or of rows leased, stands in front. Each endpoint with queued rows (found by
    -- skipping through `queue_lanes`)";
const WHY_FREE_LANES: &str =
    "    -- limit stands in front. Each endpoint with free rows (found by skipping through
    -- `queue_free_lanes`)";

const PARTS: [(&str, &str); 7] = [
    (CANDIDATES, FREED_THEN_CANDIDATES),
    (COUNT_OVER_PEERS, COUNT_BY_ROW),
    (SCAN_ALL, SCAN_FREE),
    (FIRST_LANE, FIRST_FREE_LANE),
    (NEXT_LANE, NEXT_FREE_LANE),
    (LANE_ROWS, FREE_LANE_ROWS),
    (WHY_LANES, WHY_FREE_LANES),
];

/// m0011's claim reading free rows; everything else is the same.
fn claim() -> String {
    PARTS.iter().fold(
        m0011_claim_returns_what_it_leased::claim(),
        |claim, (from, to)| super::amended(&claim, from, to),
    )
}

/// The release of m0006, and this one's: what a worker holds is found by its lease, in
/// `queue_held`, where m0006 searched the due rows.
const RELEASE_DUE: &str = "WHERE q.at <= now() AND q.worker = release_leases.worker";
const RELEASE_HELD: &str = "WHERE q.lease_until IS NOT NULL AND q.worker = release_leases.worker";
const WHY_DUE: &str = "(A held row was due when
-- it was claimed, which keeps the search to the queue's due rows.)";
const WHY_HELD: &str = "(Held rows are found by
-- their lease.)";

fn release() -> String {
    let release = super::amended(m0006_delivery_queue::RELEASE, RELEASE_DUE, RELEASE_HELD);
    super::amended(&release, WHY_DUE, WHY_HELD)
}

/// Building the indexes holds off writes to the queue while it runs; the queue holds only
/// deliveries not yet settled, so that is short.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS queue_free ON webhooks.queue (at) WHERE lease_until IS NULL;
CREATE INDEX IF NOT EXISTS queue_free_lanes ON webhooks.queue (endpoint_id, at)
    WHERE lease_until IS NULL;
CREATE INDEX IF NOT EXISTS queue_held ON webhooks.queue (lease_until)
    WHERE lease_until IS NOT NULL;
DROP INDEX IF EXISTS webhooks.queue_due;
DROP INDEX IF EXISTS webhooks.queue_lanes;
";

const INDEXES_BEFORE: &str = "
CREATE INDEX IF NOT EXISTS queue_due ON webhooks.queue (at);
CREATE INDEX IF NOT EXISTS queue_lanes ON webhooks.queue (endpoint_id, at);
DROP INDEX IF EXISTS webhooks.queue_free;
DROP INDEX IF EXISTS webhooks.queue_free_lanes;
DROP INDEX IF EXISTS webhooks.queue_held;
";

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(manager, &format!("{INDEXES}{}{}", claim(), release())).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(
            manager,
            &format!(
                "{INDEXES_BEFORE}{}{}",
                m0011_claim_returns_what_it_leased::claim(),
                m0006_delivery_queue::RELEASE
            ),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_claim_differs_from_m0011s_only_in_the_rows_it_reads() {
        let sql = super::claim();
        let parts = super::PARTS;
        for (from, to) in parts {
            assert!(sql.contains(to) && !sql.contains(from), "{from}");
        }
        let removed: usize = parts.iter().map(|(from, _)| from.len()).sum();
        let added: usize = parts.iter().map(|(_, to)| to.len()).sum();
        assert_eq!(
            sql.len() + removed,
            super::super::m0011_claim_returns_what_it_leased::claim().len() + added
        );
    }

    #[test]
    fn the_release_finds_what_is_held_by_its_lease() {
        let sql = super::release();
        assert!(sql.contains(super::RELEASE_HELD));
        assert!(!sql.contains("q.at <= now()"));
    }
}
