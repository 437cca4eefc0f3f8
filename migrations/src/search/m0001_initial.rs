//! The search documents (one per record, tombstones kept for ordering), the consumer's
//! idempotency records, and a count function for metrics across tenants.

use sea_orm_migration::prelude::*;

use crate::{RUNTIME_GROUP, tenant_rls};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // `fields` holds each searchable field for display, `folded` the same lower-cased
        // without diacritics for matching. `tsv` and `trgm_text` hold every folded field and
        // only narrow the candidates through their GIN indexes; matching and scoring then look
        // at the fields the caller may see, so a hidden field never makes a record match.
        let mut sql = format!(
            r#"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE SCHEMA IF NOT EXISTS search;
GRANT USAGE ON SCHEMA search TO {RUNTIME_GROUP};

CREATE TABLE IF NOT EXISTS search.documents (
    tenant_id      uuid NOT NULL,
    entity_type    text NOT NULL,
    entity_id      uuid NOT NULL,
    version        bigint NOT NULL,
    owner_user_id  uuid,
    record         jsonb NOT NULL DEFAULT '{{}}',
    fields         jsonb NOT NULL DEFAULT '{{}}',
    folded         jsonb NOT NULL DEFAULT '{{}}',
    title          text NOT NULL DEFAULT '',
    tsv            tsvector NOT NULL DEFAULT ''::tsvector,
    trgm_text      text NOT NULL DEFAULT '',
    deleted        boolean NOT NULL DEFAULT false,
    deleted_at     timestamptz,
    reindex_gen    uuid,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, entity_type, entity_id)
);
CREATE INDEX IF NOT EXISTS documents_tsv ON search.documents USING gin (tenant_id, tsv) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS documents_trgm ON search.documents USING gin (tenant_id, trgm_text gin_trgm_ops) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS documents_owner ON search.documents (tenant_id, entity_type, owner_user_id) WHERE NOT deleted;

GRANT SELECT, INSERT, UPDATE ON search.documents TO {RUNTIME_GROUP};
"#
        );
        sql.push_str(&tenant_rls("search", "documents", "tenant_id"));
        sql.push_str(&format!(
            r#"
-- FORCE subjects the owner to row-level security too; the count function below runs as the
-- owner and reads every tenant's rows (counts only) for metrics.
DROP POLICY IF EXISTS documents_metrics ON search.documents;
CREATE POLICY documents_metrics ON search.documents FOR SELECT TO CURRENT_USER USING (true);
CREATE OR REPLACE FUNCTION search.document_counts()
RETURNS TABLE (tenant_id uuid, entity_type text, live bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT d.tenant_id, d.entity_type, count(*) FILTER (WHERE NOT d.deleted)
      FROM search.documents d
     GROUP BY d.tenant_id, d.entity_type
$fn$;
REVOKE ALL ON FUNCTION search.document_counts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION search.document_counts() TO {RUNTIME_GROUP};
"#
        ));
        sql.push_str(&crm_bus::outbox::ddl("search", RUNTIME_GROUP));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP SCHEMA IF EXISTS search CASCADE")
            .await?;
        Ok(())
    }
}
