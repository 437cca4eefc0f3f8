//! Activities, timeline entries, the record and relation projections fed by events, the
//! audit log, idempotency records, the outbox and consumer idempotency records.

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
        // Timelines are written fan-out: an entry is stored once per record whose timeline
        // shows it (the record itself, and the accounts of a contact or opportunity), so a
        // timeline page is one range scan of `entries_timeline` in (occurred_at, id) order.
        let mut sql = format!(
            r#"
CREATE SCHEMA IF NOT EXISTS timeline;
GRANT USAGE ON SCHEMA timeline TO {RUNTIME_GROUP};

CREATE TABLE IF NOT EXISTS timeline.activities (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL,
    subject_type      text NOT NULL,
    subject_id        uuid NOT NULL,
    activity_type     text NOT NULL,
    body              text,
    occurred_at       timestamptz NOT NULL,
    due_at            timestamptz,
    completed_at      timestamptz,
    assignee_user_id  uuid,
    owner_user_id     uuid,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    created_by        uuid,
    updated_by        uuid,
    deleted_at        timestamptz,
    deleted_by        uuid,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS activities_occurred ON timeline.activities (tenant_id, occurred_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS activities_subject ON timeline.activities (tenant_id, subject_type, subject_id, occurred_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS activities_assignee ON timeline.activities (tenant_id, assignee_user_id, occurred_at, id) WHERE deleted_at IS NULL;
-- Open tasks of an assignee by due time (no due time sorts last); overdue is a prefix of it.
CREATE INDEX IF NOT EXISTS activities_open_tasks ON timeline.activities
    (tenant_id, assignee_user_id, (coalesce(due_at, 'infinity'::timestamptz)), id)
    WHERE activity_type = 'task' AND completed_at IS NULL AND deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS timeline.entries (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    record_type    text NOT NULL,
    record_id      uuid NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    entity_type    text NOT NULL,
    entity_id      uuid NOT NULL,
    action         text NOT NULL,
    actor_id       uuid,
    -- The owner of an activity entry, for the caller's activity scope; null otherwise.
    owner_user_id  uuid,
    before         jsonb,
    after          jsonb,
    occurred_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- A redelivered event never shows twice on a timeline.
CREATE UNIQUE INDEX IF NOT EXISTS entries_event ON timeline.entries (tenant_id, event_id, record_type, record_id);
CREATE INDEX IF NOT EXISTS entries_timeline ON timeline.entries (tenant_id, record_type, record_id, occurred_at DESC, id DESC);

-- Which accounts a contact, opportunity or ticket belongs to (primary account or link).
CREATE TABLE IF NOT EXISTS timeline.relations (
    tenant_id    uuid NOT NULL,
    entity_type  text NOT NULL,
    entity_id    uuid NOT NULL,
    account_id   uuid NOT NULL,
    kind         text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, entity_type, entity_id, kind, account_id)
);

-- Records known from their events: existence and owner, for activity subjects and
-- timeline reads of the record types served by other services without a lookup API here.
CREATE TABLE IF NOT EXISTS timeline.records (
    tenant_id      uuid NOT NULL,
    entity_type    text NOT NULL,
    entity_id      uuid NOT NULL,
    owner_user_id  uuid,
    deleted        boolean NOT NULL DEFAULT false,
    last_event_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, entity_type, entity_id)
);

-- Append-only: the runtime role may read and add, never change or remove.
CREATE TABLE IF NOT EXISTS timeline.audit_log (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    actor_id     uuid,
    entity_type  text NOT NULL,
    entity_id    text NOT NULL,
    action       text NOT NULL,
    event_type   text NOT NULL,
    before       jsonb,
    after        jsonb,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS audit_log_time ON timeline.audit_log (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS audit_log_entity ON timeline.audit_log (tenant_id, entity_type, entity_id, occurred_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS audit_log_actor ON timeline.audit_log (tenant_id, actor_id, occurred_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS timeline.idempotent_requests (
    tenant_id   uuid NOT NULL,
    request_id  text NOT NULL,
    operation   text NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, operation, request_id)
);

REVOKE ALL ON timeline.audit_log FROM {RUNTIME_GROUP};
GRANT SELECT, INSERT ON timeline.audit_log, timeline.entries, timeline.idempotent_requests TO {RUNTIME_GROUP};
GRANT SELECT, INSERT, UPDATE ON timeline.activities, timeline.records TO {RUNTIME_GROUP};
GRANT SELECT, INSERT, UPDATE, DELETE ON timeline.relations TO {RUNTIME_GROUP};
"#
        );
        for t in [
            "activities",
            "entries",
            "relations",
            "records",
            "audit_log",
            "idempotent_requests",
        ] {
            sql.push_str(&tenant_rls("timeline", t, "tenant_id"));
        }
        sql.push_str(&crm_bus::outbox::ddl("timeline", RUNTIME_GROUP));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP SCHEMA IF EXISTS timeline CASCADE")
            .await?;
        Ok(())
    }
}
