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
-- (an ILIKE pattern); NULL when more than `cap` rows match, or when the planner expects
-- that many (then an ordered scan of the list finds its page sooner). No tenant: none.
DROP FUNCTION IF EXISTS accounts.text_matches(text, text, integer);
CREATE FUNCTION accounts.text_matches(object_table text, pattern text, cap integer)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant uuid := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
    plan json;
    ids uuid[];
BEGIN
    IF tenant IS NULL THEN
        RETURN '{{}}';
    END IF;
    IF object_table NOT IN ('accounts', 'contacts') THEN
        RAISE EXCEPTION 'text_matches: unknown table %', object_table;
    END IF;
    EXECUTE format(
        'EXPLAIN (FORMAT JSON) SELECT 1 FROM accounts.%I t
          WHERE t.tenant_id = %L AND t.deleted_at IS NULL AND t.search ILIKE %L',
        object_table, tenant, pattern)
    INTO plan;
    IF (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric > cap THEN
        RETURN NULL;
    END IF;
    -- EXECUTE plans with the actual pattern, so a rare term takes the trigram index.
    EXECUTE format(
        'SELECT array_agg(m.id) FROM (SELECT t.id FROM accounts.%I t
          WHERE t.tenant_id = $1 AND t.deleted_at IS NULL AND t.search ILIKE $2
          LIMIT $3) m', object_table)
    INTO ids
    USING tenant, pattern, cap + 1;
    IF coalesce(cardinality(ids), 0) > cap THEN
        RETURN NULL;
    END IF;
    RETURN coalesce(ids, '{{}}');
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
