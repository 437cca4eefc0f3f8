//! Pipelines, opportunities, tickets, leads, stage history, account names, idempotency
//! records, the outbox and consumer idempotency records.

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
        // Lists stay on index scans: every list index is partial on live rows and leads with
        // the tenant, then the filter, the sort key and the id (the keyset). The report reads
        // `opportunities_report`, which covers every column it sums.
        let mut sql = format!(
            r#"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE SCHEMA IF NOT EXISTS pipeline;
GRANT USAGE ON SCHEMA pipeline TO {RUNTIME_GROUP};

CREATE TABLE IF NOT EXISTS pipeline.pipelines (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL,
    object_type          text NOT NULL CHECK (object_type IN ('deal', 'ticket')),
    name                 text NOT NULL,
    is_default           boolean NOT NULL DEFAULT false,
    stages               jsonb NOT NULL DEFAULT '[]',
    allowed_transitions  jsonb NOT NULL DEFAULT '{{}}',
    version              bigint NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    created_by           uuid,
    updated_by           uuid,
    PRIMARY KEY (tenant_id, id)
);
-- One default pipeline per object type: creating the defaults twice at once inserts one.
CREATE UNIQUE INDEX IF NOT EXISTS pipelines_default ON pipeline.pipelines (tenant_id, object_type) WHERE is_default;

CREATE TABLE IF NOT EXISTS pipeline.opportunities (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL,
    account_id        uuid NOT NULL,
    name              text NOT NULL,
    amount_cents      bigint CHECK (amount_cents >= 0),
    currency          text,
    pipeline_id       uuid NOT NULL,
    stage             text NOT NULL,
    stage_entered_at  timestamptz NOT NULL DEFAULT now(),
    close_date        date,
    lost_reason       text,
    won_at            timestamptz,
    owner_user_id     uuid,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    created_by        uuid,
    updated_by        uuid,
    deleted_at        timestamptz,
    deleted_by        uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, pipeline_id) REFERENCES pipeline.pipelines (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS opportunities_created ON pipeline.opportunities (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_updated ON pipeline.opportunities (tenant_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_name ON pipeline.opportunities (tenant_id, name, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_owner ON pipeline.opportunities (tenant_id, owner_user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_account ON pipeline.opportunities (tenant_id, account_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_stage ON pipeline.opportunities (tenant_id, pipeline_id, stage, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_search ON pipeline.opportunities USING gin (tenant_id, name gin_trgm_ops) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS opportunities_report ON pipeline.opportunities (tenant_id, pipeline_id, close_date)
    INCLUDE (stage, currency, amount_cents, owner_user_id, created_at, won_at) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS pipeline.tickets (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL,
    subject           text NOT NULL,
    description       text,
    contact_id        uuid,
    account_id        uuid,
    priority          text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    pipeline_id       uuid NOT NULL,
    stage             text NOT NULL,
    stage_entered_at  timestamptz NOT NULL DEFAULT now(),
    assignee_user_id  uuid,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    created_by        uuid,
    updated_by        uuid,
    deleted_at        timestamptz,
    deleted_by        uuid,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, pipeline_id) REFERENCES pipeline.pipelines (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS tickets_created ON pipeline.tickets (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS tickets_updated ON pipeline.tickets (tenant_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS tickets_assignee ON pipeline.tickets (tenant_id, assignee_user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS tickets_account ON pipeline.tickets (tenant_id, account_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS tickets_stage ON pipeline.tickets (tenant_id, pipeline_id, stage, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS tickets_search ON pipeline.tickets USING gin (tenant_id, subject gin_trgm_ops) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS pipeline.leads (
    tenant_id                 uuid NOT NULL,
    id                        uuid NOT NULL,
    first_name                text NOT NULL DEFAULT '',
    last_name                 text NOT NULL,
    email                     text,
    company                   text,
    source                    text,
    status                    text NOT NULL CHECK (status IN ('new', 'working', 'qualified', 'disqualified', 'converted')),
    owner_user_id             uuid,
    converted_account_id      uuid,
    converted_contact_id      uuid,
    converted_opportunity_id  uuid,
    converted_at              timestamptz,
    source_event_id           uuid,
    version                   bigint NOT NULL DEFAULT 1,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    created_by                uuid,
    updated_by                uuid,
    deleted_at                timestamptz,
    deleted_by                uuid,
    search                    text GENERATED ALWAYS AS (first_name || ' ' || last_name || ' ' || coalesce(email, '') || ' ' || coalesce(company, '')) STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS leads_created ON pipeline.leads (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS leads_updated ON pipeline.leads (tenant_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS leads_last_name ON pipeline.leads (tenant_id, last_name, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS leads_owner ON pipeline.leads (tenant_id, owner_user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS leads_status ON pipeline.leads (tenant_id, status, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS leads_search ON pipeline.leads USING gin (tenant_id, search gin_trgm_ops) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS leads_source_event ON pipeline.leads (tenant_id, source_event_id) WHERE source_event_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS pipeline.stage_history (
    tenant_id            uuid NOT NULL,
    id                   uuid NOT NULL,
    entity_type          text NOT NULL,
    entity_id            uuid NOT NULL,
    pipeline_id          uuid NOT NULL,
    from_stage           text,
    to_stage             text NOT NULL,
    actor_id             uuid,
    moved_at             timestamptz NOT NULL DEFAULT now(),
    seconds_in_previous  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS stage_history_entity ON pipeline.stage_history (tenant_id, entity_type, entity_id, id);

-- Account names, kept from account.* events so lists show names without asking per row.
CREATE TABLE IF NOT EXISTS pipeline.account_names (
    tenant_id   uuid NOT NULL,
    account_id  uuid NOT NULL,
    name        text NOT NULL,
    version     bigint NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, account_id)
);

CREATE TABLE IF NOT EXISTS pipeline.idempotent_requests (
    tenant_id   uuid NOT NULL,
    request_id  text NOT NULL,
    operation   text NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, operation, request_id)
);

GRANT SELECT, INSERT, UPDATE ON pipeline.pipelines, pipeline.opportunities, pipeline.tickets, pipeline.leads, pipeline.account_names TO {RUNTIME_GROUP};
GRANT SELECT, INSERT ON pipeline.stage_history, pipeline.idempotent_requests TO {RUNTIME_GROUP};
"#
        );
        for t in [
            "pipelines",
            "opportunities",
            "tickets",
            "leads",
            "stage_history",
            "account_names",
            "idempotent_requests",
        ] {
            sql.push_str(&tenant_rls("pipeline", t, "tenant_id"));
        }
        sql.push_str(&crm_bus::outbox::ddl("pipeline", RUNTIME_GROUP));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP SCHEMA IF EXISTS pipeline CASCADE")
            .await?;
        Ok(())
    }
}
