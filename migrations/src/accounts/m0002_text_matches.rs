//! Partial-text matching that can use the trigram indexes.
//!
//! Under row-level security PostgreSQL only pushes leakproof operators into index scans, and
//! `ILIKE` is not leakproof: a runtime-role query for a rare term walks the whole sort index.
//! `accounts.text_matches` runs as the schema owner, filters by the transaction's tenant
//! itself, and so reaches the `*_search` trigram indexes. It returns ids only; the caller's
//! list then reads those rows under its own policies, scope and filters.

use sea_orm_migration::prelude::*;

use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_text_matches"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = format!(
            r#"
DROP POLICY IF EXISTS definer_lookup ON accounts.accounts;
CREATE POLICY definer_lookup ON accounts.accounts FOR SELECT TO CURRENT_USER USING (true);
DROP POLICY IF EXISTS definer_lookup ON accounts.contacts;
CREATE POLICY definer_lookup ON accounts.contacts FOR SELECT TO CURRENT_USER USING (true);

-- The ids of the tenant's live rows of `object_table` whose search text matches `pattern`
-- (an ILIKE pattern), at most `cap` of them. No tenant set: no rows.
CREATE OR REPLACE FUNCTION accounts.text_matches(object_table text, pattern text, cap integer)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant uuid := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
BEGIN
    IF tenant IS NULL THEN
        RETURN;
    END IF;
    IF object_table NOT IN ('accounts', 'contacts') THEN
        RAISE EXCEPTION 'text_matches: unknown table %', object_table;
    END IF;
    -- EXECUTE plans with the actual pattern: a rare term takes the trigram index, a common
    -- one a scan that stops at the cap.
    RETURN QUERY EXECUTE format(
        'SELECT t.id FROM accounts.%I t
          WHERE t.tenant_id = $1 AND t.deleted_at IS NULL AND t.search ILIKE $2
          LIMIT $3', object_table)
    USING tenant, pattern, cap;
END
$fn$;
REVOKE ALL ON FUNCTION accounts.text_matches(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION accounts.text_matches(text, text, integer) TO {RUNTIME_GROUP};
"#
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP FUNCTION IF EXISTS accounts.text_matches(text, text, integer);
                 DROP POLICY IF EXISTS definer_lookup ON accounts.accounts;
                 DROP POLICY IF EXISTS definer_lookup ON accounts.contacts;",
            )
            .await?;
        Ok(())
    }
}
