use crm_kit::ids::TenantId;

/// Errors of the outbox writer and the bus plumbing.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event belongs to tenant {event} but the transaction is bound to tenant {tx}")]
    TenantMismatch { event: TenantId, tx: TenantId },
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}
