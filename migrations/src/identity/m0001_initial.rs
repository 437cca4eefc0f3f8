//! Tenants, roles, users, teams, refresh tokens, API clients, security events, signing keys,
//! the outbox and consumer idempotency records.

use sea_orm_migration::prelude::*;

use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

fn tenant_rls(table: &str, column: &str) -> String {
    crate::tenant_rls("identity", table, column)
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let mut sql = format!(
            r#"
CREATE SCHEMA IF NOT EXISTS identity;
GRANT USAGE ON SCHEMA identity TO {RUNTIME_GROUP};

CREATE TABLE IF NOT EXISTS identity.tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    slug        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid
);
CREATE UNIQUE INDEX IF NOT EXISTS tenants_slug ON identity.tenants (slug);

CREATE TABLE IF NOT EXISTS identity.roles (
    tenant_id    uuid NOT NULL REFERENCES identity.tenants (id),
    id           uuid NOT NULL,
    key          text NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    builtin      boolean NOT NULL DEFAULT false,
    permissions  jsonb NOT NULL DEFAULT '[]',
    field_rules  jsonb NOT NULL DEFAULT '[]',
    version      bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    created_by   uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key)
);

CREATE TABLE IF NOT EXISTS identity.users (
    tenant_id      uuid NOT NULL REFERENCES identity.tenants (id),
    id             uuid NOT NULL,
    email          text NOT NULL,
    name           text NOT NULL DEFAULT '',
    role_id        uuid NOT NULL,
    password_hash  text,
    timezone       text NOT NULL DEFAULT 'UTC',
    locale         text NOT NULL DEFAULT 'en',
    disabled       boolean NOT NULL DEFAULT false,
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    created_by     uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email),
    FOREIGN KEY (tenant_id, role_id) REFERENCES identity.roles (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS identity.teams (
    tenant_id   uuid NOT NULL REFERENCES identity.tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS identity.team_members (
    tenant_id   uuid NOT NULL,
    team_id     uuid NOT NULL,
    user_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid,
    PRIMARY KEY (tenant_id, team_id, user_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES identity.teams (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES identity.users (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS team_members_user ON identity.team_members (tenant_id, user_id);

CREATE TABLE IF NOT EXISTS identity.refresh_tokens (
    tenant_id          uuid NOT NULL,
    id                 uuid NOT NULL,
    family_id          uuid NOT NULL,
    user_id            uuid NOT NULL,
    token_hash         bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    family_expires_at  timestamptz NOT NULL,
    used_at            timestamptz,
    revoked_at         timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES identity.users (tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS refresh_tokens_hash ON identity.refresh_tokens (token_hash);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON identity.refresh_tokens (tenant_id, family_id);

CREATE TABLE IF NOT EXISTS identity.api_clients (
    tenant_id     uuid NOT NULL REFERENCES identity.tenants (id),
    id            uuid NOT NULL,
    name          text NOT NULL,
    client_id     text NOT NULL,
    secret_hash   bytea NOT NULL,
    role_id       uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    created_by    uuid,
    last_used_at  timestamptz,
    deleted_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES identity.roles (tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS api_clients_client_id ON identity.api_clients (client_id);

CREATE TABLE IF NOT EXISTS identity.security_events (
    tenant_id       uuid NOT NULL,
    id              uuid NOT NULL,
    kind            text NOT NULL,
    actor_id        uuid,
    subject_id      uuid,
    client_address  text,
    detail          jsonb NOT NULL DEFAULT '{{}}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS identity.idempotent_requests (
    tenant_id   uuid NOT NULL,
    request_id  text NOT NULL,
    operation   text NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, operation, request_id)
);

-- Platform keys, not tenant data: the JWKS is public and shared by every tenant.
CREATE TABLE IF NOT EXISTS identity.signing_keys (
    kid           text PRIMARY KEY,
    alg           text NOT NULL,
    public_x      text NOT NULL,
    private_enc   bytea NOT NULL,
    nonce         bytea NOT NULL,
    status        text NOT NULL CHECK (status IN ('current', 'previous', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS signing_keys_one_current ON identity.signing_keys (status) WHERE status = 'current';

-- Look-ups that must run before the tenant is known return only a tenant id.
CREATE OR REPLACE FUNCTION identity.tenant_id_by_slug(p_slug text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, identity
    AS $$ SELECT id FROM identity.tenants WHERE slug = p_slug $$;
CREATE OR REPLACE FUNCTION identity.tenant_id_by_refresh_token(p_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, identity
    AS $$ SELECT tenant_id FROM identity.refresh_tokens WHERE token_hash = p_hash $$;
CREATE OR REPLACE FUNCTION identity.tenant_id_by_client_id(p_client_id text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, identity
    AS $$ SELECT tenant_id FROM identity.api_clients WHERE client_id = p_client_id AND deleted_at IS NULL $$;
REVOKE ALL ON FUNCTION identity.tenant_id_by_slug(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION identity.tenant_id_by_refresh_token(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION identity.tenant_id_by_client_id(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION identity.tenant_id_by_slug(text) TO {RUNTIME_GROUP};
GRANT EXECUTE ON FUNCTION identity.tenant_id_by_refresh_token(bytea) TO {RUNTIME_GROUP};
GRANT EXECUTE ON FUNCTION identity.tenant_id_by_client_id(text) TO {RUNTIME_GROUP};
-- Row-level security is forced on the owner too; the look-ups above run as the owner, so it
-- may read these tables to find a tenant id. The runtime role is never the owner.
DROP POLICY IF EXISTS definer_lookup ON identity.tenants;
CREATE POLICY definer_lookup ON identity.tenants FOR SELECT TO CURRENT_USER USING (true);
DROP POLICY IF EXISTS definer_lookup ON identity.refresh_tokens;
CREATE POLICY definer_lookup ON identity.refresh_tokens FOR SELECT TO CURRENT_USER USING (true);
DROP POLICY IF EXISTS definer_lookup ON identity.api_clients;
CREATE POLICY definer_lookup ON identity.api_clients FOR SELECT TO CURRENT_USER USING (true);

GRANT SELECT, INSERT, UPDATE ON identity.tenants, identity.roles, identity.users, identity.teams,
    identity.refresh_tokens, identity.api_clients, identity.signing_keys TO {RUNTIME_GROUP};
GRANT SELECT, INSERT, DELETE ON identity.team_members, identity.idempotent_requests TO {RUNTIME_GROUP};
-- Security events are append-only for the services.
GRANT SELECT, INSERT ON identity.security_events TO {RUNTIME_GROUP};
"#
        );
        sql.push_str(&tenant_rls("tenants", "id"));
        for t in [
            "roles",
            "users",
            "teams",
            "team_members",
            "refresh_tokens",
            "api_clients",
            "security_events",
            "idempotent_requests",
        ] {
            sql.push_str(&tenant_rls(t, "tenant_id"));
        }
        sql.push_str(&crm_bus::outbox::ddl("identity", RUNTIME_GROUP));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP SCHEMA IF EXISTS identity CASCADE")
            .await?;
        Ok(())
    }
}
