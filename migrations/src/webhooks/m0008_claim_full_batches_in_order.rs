//! A claim goes endpoint by endpoint only when its scan in due order ran through its whole
//! budget. Before, it also went that way whenever the scan's first rows (four per row
//! wanted) left it short of a batch. Under a steady load that is most claims: the rows at
//! the head of the queue belong to the endpoints that lag behind, which have little room
//! left, so the scan's rows are mostly of no use, while the endpoint-by-endpoint path
//! steps past every endpoint's leased rows once more. Such a claim now returns what it
//! found; the next one, with the lagging endpoints at their limit, reads past them.
//! A backlog behind an endpoint at its limit still sends the claim endpoint by endpoint,
//! since it fills the whole budget.

use sea_orm_migration::prelude::*;

use super::m0007_claim_past_backlogs;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0008_claim_full_batches_in_order"
    }
}

/// The condition under which m0007's claim goes endpoint by endpoint, and this one's.
const BEFORE: &str =
    "IF coalesce(cardinality(ids), 0) < batch AND (seen >= batch * 4 OR past_budget) THEN";
const AFTER: &str = "IF coalesce(cardinality(ids), 0) < batch AND past_budget THEN";

/// m0007's claim with the narrower condition; everything else is the same.
pub(super) fn claim() -> String {
    super::amended(m0007_claim_past_backlogs::CLAIM, BEFORE, AFTER)
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(manager, &claim()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Only the function: stepping back takes no lock on the queue here, so a claim
        // running meanwhile cannot deadlock with the steps after it.
        super::execute(manager, m0007_claim_past_backlogs::CLAIM).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_claim_differs_from_m0007s_only_in_its_condition() {
        let sql = super::claim();
        assert!(sql.contains(super::AFTER));
        assert!(!sql.contains("seen >= batch * 4 OR"));
        assert_eq!(
            sql.len() + super::BEFORE.len() - super::AFTER.len(),
            super::m0007_claim_past_backlogs::CLAIM.len()
        );
    }
}
