//! Idempotent creates: each service schema has an `idempotent_requests` table recording which
//! entity a request id created, with a fingerprint of the request, in the create's transaction.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use uuid::Uuid;

use crate::{ApiError, ApiResult, ErrorCode, TenantTx};

/// The entity `request_id` already created for `operation`, if any; the same request id with
/// another request (another fingerprint) is refused. `schema` is the service's own schema.
pub async fn find(
    tx: &TenantTx,
    schema: &str,
    operation: &str,
    request_id: &str,
    fingerprint: &str,
) -> ApiResult<Option<Uuid>> {
    let row = tx
        .conn()
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT response->>'id' AS id, response->>'fp' AS fp FROM {schema}.idempotent_requests \
                 WHERE tenant_id = $1 AND operation = $2 AND request_id = $3"
            ),
            [
                tx.tenant().uuid().into(),
                operation.into(),
                request_id.into(),
            ],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let fp: Option<String> = row.try_get("", "fp").ok().flatten();
    if fp.as_deref() != Some(fingerprint) {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this request_id was used with another request",
        ));
    }
    Ok(row
        .try_get::<Option<String>>("", "id")
        .ok()
        .flatten()
        .and_then(|s| Uuid::parse_str(&s).ok()))
}

/// Records that `request_id` created entity `id`.
pub async fn remember(
    tx: &TenantTx,
    schema: &str,
    operation: &str,
    request_id: &str,
    fingerprint: &str,
    id: Uuid,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO {schema}.idempotent_requests (tenant_id, request_id, operation, response) \
                 VALUES ($1, $2, $3, $4)"
            ),
            [
                tx.tenant().uuid().into(),
                request_id.into(),
                operation.into(),
                serde_json::json!({"id": id, "fp": fingerprint}).into(),
            ],
        ))
        .await?;
    Ok(())
}
