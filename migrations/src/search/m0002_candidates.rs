//! Candidate lookup that can use the GIN indexes.
//!
//! Under row-level security PostgreSQL only pushes leakproof operators into index scans, and
//! neither pg_trgm's `<%` nor the text search `@@` is leakproof: a runtime-role query reaches
//! `documents_tsv` and `documents_trgm` with the tenant column alone, which on a large tenant
//! is every row. `search.candidates` runs as the schema owner, filters by the transaction's
//! tenant itself, and applies the caller's reach per record type; it returns keys only, and
//! the service then reads those rows under its own policies and matches the visible fields.

use sea_orm_migration::{prelude::*, sea_orm::Statement};

use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_candidates"
    }
}

const SIGNATURE: &str = "search.candidates(text[], jsonb, text, text, text, text, integer)";

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // pg_trgm's operators resolve through the function's fixed search path.
        let trgm = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT quote_ident(extnamespace::regnamespace::text) AS s \
                 FROM pg_extension WHERE extname = 'pg_trgm'",
            ))
            .await?
            .ok_or_else(|| DbErr::Migration("pg_trgm is not installed".into()))?
            .try_get::<String>("", "s")?;
        let sql = format!(
            r#"
-- The keys of the tenant's live documents of `types` that match `q` over any indexed field,
-- at most `cap` of them, taken tier by tier as the scores rank them, so a common term stops
-- early instead of ranking every match: every word exact (`tsq` without its prefix marks),
-- then every word as a prefix (`tsq`), then `pattern` (a LIKE pattern over the folded text)
-- or the digits pattern `digits`, and last, only when none of those match, word similarity
-- of `q` (pg_trgm's `<%`, at the transaction's pg_trgm.word_similarity_threshold), best first. `owners` maps a record type
-- to the owners the caller reaches (a JSON array of ids); a type it does not name is reached
-- whole. No tenant: none.
DROP FUNCTION IF EXISTS {SIGNATURE};
CREATE FUNCTION {SIGNATURE}
RETURNS TABLE (entity_type text, entity_id uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 200
SET search_path = pg_catalog, {trgm}, pg_temp
AS $fn$
DECLARE
    types ALIAS FOR $1;
    owners ALIAS FOR $2;
    q ALIAS FOR $3;
    pattern ALIAS FOR $4;
    tsq ALIAS FOR $5;
    digits ALIAS FOR $6;
    cap ALIAS FOR $7;
    tenant uuid := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
    base text := 'SELECT d.entity_type, d.entity_id FROM search.documents d
          WHERE d.tenant_id = $1 AND NOT d.deleted AND d.entity_type = ANY($2)
            AND (NOT $3 ? d.entity_type OR ($3 -> d.entity_type) ? d.owner_user_id::text)';
    exact text := NULLIF(replace(tsq, ':*', ''), '');
    seen text := 'false';
    fragment text := 'd.trgm_text LIKE $5';
    got bigint := 0;
    n bigint;
BEGIN
    IF tenant IS NULL THEN
        RETURN;
    END IF;
    -- Each EXECUTE plans with the actual values, so a rare term takes the GIN indexes and a
    -- common one reads only as far as its LIMIT. Parameters: $1 tenant, $2 types, $3 owners,
    -- $4 q, $5 pattern, $6 exact, $7 tsq, $8 digits, $9 how many more.
    IF tsq IS NOT NULL THEN
        RETURN QUERY EXECUTE base || ' AND d.tsv @@ to_tsquery(''simple'', $6) LIMIT $9'
            USING tenant, types, owners, q, pattern, exact, tsq, digits, cap;
        GET DIAGNOSTICS n = ROW_COUNT;
        got := got + n;
        IF got < cap THEN
            RETURN QUERY EXECUTE base || ' AND d.tsv @@ to_tsquery(''simple'', $7)
                AND NOT d.tsv @@ to_tsquery(''simple'', $6) LIMIT $9'
                USING tenant, types, owners, q, pattern, exact, tsq, digits, cap - got;
            GET DIAGNOSTICS n = ROW_COUNT;
            got := got + n;
        END IF;
        seen := 'd.tsv @@ to_tsquery(''simple'', $7)';
    END IF;
    IF digits IS NOT NULL THEN
        fragment := fragment || ' OR d.trgm_text LIKE $8';
    END IF;
    IF got < cap THEN
        RETURN QUERY EXECUTE base || ' AND (' || fragment || ') AND NOT ' || seen || ' LIMIT $9'
            USING tenant, types, owners, q, pattern, exact, tsq, digits, cap - got;
        GET DIAGNOSTICS n = ROW_COUNT;
        got := got + n;
    END IF;
    -- Typos are looked for only when nothing matches as typed: a term that matches already
    -- ranks those matches first, and a short term's similar words are many.
    IF got = 0 THEN
        RETURN QUERY EXECUTE base || ' AND $4 <% d.trgm_text AND NOT (' || fragment
            || ') AND NOT ' || seen || ' ORDER BY word_similarity($4, d.trgm_text) DESC LIMIT $9'
            USING tenant, types, owners, q, pattern, exact, tsq, digits, cap - got;
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {RUNTIME_GROUP};
"#
        );
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP FUNCTION IF EXISTS {SIGNATURE}"))
            .await?;
        Ok(())
    }
}
