//! One sea-orm migrator per service schema, plus the set-up that runs before them:
//! the database, the runtime group role every service role is a member of, and its grants.

use crm_kit::admin::{retry_concurrent, retry_deadlocks};
/// The trait of the per-schema migrators, for callers that step one back and forth.
pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DbErr};

pub mod accounts;
pub mod identity;
pub mod pipeline;
pub mod search;
pub mod timeline;
pub mod webhooks;

/// The group role that holds the runtime privileges; service login roles are members of it.
pub const RUNTIME_GROUP: &str = "crm_runtime";

/// Creates the database if missing, the runtime roles, and runs every service's migrations.
///
/// `admin_url` connects as the owner (or a superuser); `runtime_role` is the login role that
/// services use (the user of `DATABASE_URL`).
pub async fn migrate_all(admin_url: &str, runtime_role: &str) -> anyhow::Result<()> {
    crm_kit::admin::ensure_database(admin_url).await?;
    let db = Database::connect(admin_url).await?;
    ensure_roles(&db, runtime_role).await?;
    retry_deadlocks(|| identity::Migrator::up(&db, None)).await?;
    retry_deadlocks(|| accounts::Migrator::up(&db, None)).await?;
    retry_deadlocks(|| pipeline::Migrator::up(&db, None)).await?;
    retry_deadlocks(|| webhooks::Migrator::up(&db, None)).await?;
    retry_deadlocks(|| search::Migrator::up(&db, None)).await?;
    retry_deadlocks(|| timeline::Migrator::up(&db, None)).await?;
    db.close().await?;
    Ok(())
}

/// Creates the runtime group role and makes `runtime_role` a member of it.
pub async fn ensure_roles<C: ConnectionTrait>(db: &C, runtime_role: &str) -> Result<(), DbErr> {
    let group = format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{RUNTIME_GROUP}') THEN \
             CREATE ROLE {RUNTIME_GROUP} NOLOGIN NOSUPERUSER NOBYPASSRLS; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
         END $$"
    );
    retry_concurrent(|| db.execute_unprepared(&group)).await?;
    let role = runtime_role.replace('"', "\"\"");
    let lit = runtime_role.replace('\'', "''");
    let login = format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{lit}') THEN \
             CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
           END IF; \
           IF NOT pg_has_role('{lit}', '{RUNTIME_GROUP}', 'MEMBER') THEN \
             GRANT {RUNTIME_GROUP} TO \"{role}\"; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
         END $$"
    );
    retry_concurrent(|| db.execute_unprepared(&login)).await?;
    Ok(())
}

/// Row-level security on one tenant table: enabled, forced on the owner too, and one policy
/// on the transaction's tenant setting.
pub(crate) fn tenant_rls(schema: &str, table: &str, column: &str) -> String {
    format!(
        "ALTER TABLE {schema}.{table} ENABLE ROW LEVEL SECURITY;
         ALTER TABLE {schema}.{table} FORCE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS tenant_isolation ON {schema}.{table};
         CREATE POLICY tenant_isolation ON {schema}.{table}
           USING ({column} = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
           WITH CHECK ({column} = NULLIF(current_setting('app.tenant_id', true), '')::uuid);"
    )
}
