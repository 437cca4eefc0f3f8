//! Accounts, contacts, account–contact links, custom field definitions, idempotency records,
//! the outbox and consumer idempotency records.

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
        // the tenant, then the sort key and the id (the keyset); `q` uses trigram indexes.
        let mut sql = format!(
            r#"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE SCHEMA IF NOT EXISTS accounts;
GRANT USAGE ON SCHEMA accounts TO {RUNTIME_GROUP};

CREATE TABLE IF NOT EXISTS accounts.accounts (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    name           text NOT NULL,
    website        text,
    industry       text,
    owner_user_id  uuid,
    custom         jsonb NOT NULL DEFAULT '{{}}',
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    created_by     uuid,
    updated_by     uuid,
    deleted_at     timestamptz,
    deleted_by     uuid,
    search         text GENERATED ALWAYS AS (name || ' ' || coalesce(website, '')) STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS accounts_created ON accounts.accounts (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_updated ON accounts.accounts (tenant_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_name ON accounts.accounts (tenant_id, name, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_owner ON accounts.accounts (tenant_id, owner_user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_industry ON accounts.accounts (tenant_id, industry, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_search ON accounts.accounts USING gin (tenant_id, search gin_trgm_ops) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS accounts_custom ON accounts.accounts USING gin (tenant_id, custom jsonb_path_ops) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS accounts.contacts (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    first_name     text NOT NULL,
    last_name      text NOT NULL,
    email          text,
    phone          text,
    phone_e164     text,
    title          text,
    account_id     uuid,
    owner_user_id  uuid,
    custom         jsonb NOT NULL DEFAULT '{{}}',
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    created_by     uuid,
    updated_by     uuid,
    deleted_at     timestamptz,
    deleted_by     uuid,
    search         text GENERATED ALWAYS AS (first_name || ' ' || last_name || ' ' || coalesce(email, '')) STORED,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts.accounts (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS contacts_created ON accounts.contacts (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_updated ON accounts.contacts (tenant_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_last_name ON accounts.contacts (tenant_id, last_name, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_owner ON accounts.contacts (tenant_id, owner_user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_account ON accounts.contacts (tenant_id, account_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_email ON accounts.contacts (tenant_id, email) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_search ON accounts.contacts USING gin (tenant_id, search gin_trgm_ops) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_custom ON accounts.contacts USING gin (tenant_id, custom jsonb_path_ops) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS accounts.account_contacts (
    tenant_id   uuid NOT NULL,
    account_id  uuid NOT NULL,
    contact_id  uuid NOT NULL,
    role        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid,
    PRIMARY KEY (tenant_id, account_id, contact_id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts.accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES accounts.contacts (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS account_contacts_contact ON accounts.account_contacts (tenant_id, contact_id);

CREATE TABLE IF NOT EXISTS accounts.custom_fields (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    object_type  text NOT NULL,
    key          text NOT NULL,
    label        text NOT NULL,
    type         text NOT NULL,
    options      jsonb NOT NULL DEFAULT '[]',
    required     boolean NOT NULL DEFAULT false,
    version      bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    created_by   uuid,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS custom_fields_key ON accounts.custom_fields (tenant_id, object_type, key);

CREATE TABLE IF NOT EXISTS accounts.idempotent_requests (
    tenant_id   uuid NOT NULL,
    request_id  text NOT NULL,
    operation   text NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, operation, request_id)
);

GRANT SELECT, INSERT, UPDATE ON accounts.accounts, accounts.contacts TO {RUNTIME_GROUP};
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts.account_contacts, accounts.custom_fields TO {RUNTIME_GROUP};
GRANT SELECT, INSERT ON accounts.idempotent_requests TO {RUNTIME_GROUP};
"#
        );
        for t in [
            "accounts",
            "contacts",
            "account_contacts",
            "custom_fields",
            "idempotent_requests",
        ] {
            sql.push_str(&tenant_rls("accounts", t, "tenant_id"));
        }
        sql.push_str(&crm_bus::outbox::ddl("accounts", RUNTIME_GROUP));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP SCHEMA IF EXISTS accounts CASCADE")
            .await?;
        Ok(())
    }
}
