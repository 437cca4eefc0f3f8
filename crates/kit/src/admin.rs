//! Administrative database operations run with the owner/superuser connection:
//! creating databases and the runtime role. Never used by a running service.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};
use url::Url;

/// Errors of administrative operations.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{var}: not a valid PostgreSQL URL: {reason}")]
    BadUrl { var: &'static str, reason: String },
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn parse(url: &str, var: &'static str) -> Result<Url, AdminError> {
    Url::parse(url).map_err(|e| AdminError::BadUrl {
        var,
        reason: e.to_string(),
    })
}

/// The database name of a PostgreSQL URL.
pub fn database_name(url: &str) -> Result<String, AdminError> {
    let u = parse(url, "DATABASE_URL")?;
    let name = u.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err(AdminError::BadUrl {
            var: "DATABASE_URL",
            reason: "no database name".into(),
        });
    }
    Ok(name)
}

/// The user name of a PostgreSQL URL.
pub fn user_name(url: &str) -> Result<String, AdminError> {
    let u = parse(url, "DATABASE_URL")?;
    if u.username().is_empty() {
        return Err(AdminError::BadUrl {
            var: "DATABASE_URL",
            reason: "no user name".into(),
        });
    }
    Ok(u.username().to_owned())
}

/// The same URL pointing at another database.
pub fn with_database(url: &str, database: &str) -> Result<String, AdminError> {
    let mut u = parse(url, "DATABASE_URL")?;
    u.set_path(&format!("/{database}"));
    Ok(u.to_string())
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates the database named in `admin_url` if it does not exist yet.
pub async fn ensure_database(admin_url: &str) -> Result<(), AdminError> {
    let name = database_name(admin_url)?;
    let maintenance = Database::connect(with_database(admin_url, "postgres")?).await?;
    let exists = maintenance
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        let res = maintenance
            .execute_unprepared(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await;
        // Another process may have created it in the meantime.
        if let Err(e) = res
            && !e.to_string().contains("already exists")
        {
            return Err(e.into());
        }
    }
    maintenance.close().await?;
    Ok(())
}

/// Drops a database (tests clean up after themselves).
pub async fn drop_database(admin_url: &str) -> Result<(), AdminError> {
    let name = database_name(admin_url)?;
    let maintenance = Database::connect(with_database(admin_url, "postgres")?).await?;
    maintenance
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&name)
        ))
        .await?;
    maintenance.close().await?;
    Ok(())
}

/// Creates the runtime login role if missing: no superuser, no BYPASSRLS, owns nothing.
///
/// Roles are cluster-wide, so parallel test databases race on them; PostgreSQL then reports
/// "tuple concurrently updated", and a short retry settles it.
pub async fn ensure_runtime_role(admin: &DatabaseConnection, role: &str) -> Result<(), AdminError> {
    let sql = format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) THEN \
             CREATE ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
           END IF; \
           IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit} AND (rolsuper OR rolbypassrls)) THEN \
             ALTER ROLE {ident} NOSUPERUSER NOBYPASSRLS; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
         END $$",
        lit = quote_literal(role),
        ident = quote_ident(role)
    );
    retry_concurrent(|| admin.execute_unprepared(&sql)).await?;
    Ok(())
}

/// Runs a role statement again when a concurrent session changed the same catalog row.
pub async fn retry_concurrent<F, Fut, T>(f: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    retry_on("concurrently", 10, 20, f).await
}

/// Runs a migration step again when PostgreSQL chose it as the victim of a deadlock: a
/// service running meanwhile may lock the same tables in another order. Each migration runs
/// in a transaction of its own, so the one aborted left nothing behind, and the step goes
/// on from it. The step must name where it ends (up to the latest, say), not a number of
/// steps from wherever it is: a try that fails may have applied some migrations.
pub async fn retry_deadlocks<F, Fut, T>(f: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    retry_on("deadlock detected", 5, 100, f).await
}

/// Runs `f` again, up to `tries` more times with a growing pause, while it fails with an
/// error whose text contains `marker`.
async fn retry_on<F, Fut, T>(marker: &str, tries: u64, pause_ms: u64, mut f: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if attempt < tries && e.to_string().contains(marker) => {
                attempt += 1;
                tracing::info!(error = %e, attempt, "running a statement again");
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms * attempt)).await;
            }
            other => return other,
        }
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_database_and_reads_user() {
        let url = "postgres://crm_app@127.0.0.1:5432/crm";
        assert_eq!(database_name(url).unwrap(), "crm");
        assert_eq!(user_name(url).unwrap(), "crm_app");
        assert_eq!(
            with_database(url, "other").unwrap(),
            "postgres://crm_app@127.0.0.1:5432/other"
        );
        assert!(database_name("postgres://x@h:1/").is_err());
    }
}
