//! Whether a record exists and the caller may read it, per record type: accounts and contacts
//! are asked of accounts-contacts over gRPC with the caller's own token (so its permissions
//! apply); opportunities, leads and tickets are looked up in the projection of their events
//! (live records known from `*.created`), with the caller's scope on the projected owner.
//! Pipeline lookups move to its gRPC API by changing the match arms here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crm_kit::{ApiError, ApiResult, Caller, Db, TenantId, access::Access};
use crm_proto::accounts::{self as apb, accounts_service_client::AccountsServiceClient};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::store;

/// Record types an activity can be about and that have a timeline.
pub const SUBJECT_TYPES: &[&str] = &["account", "contact", "opportunity", "lead", "ticket"];

/// How long a positive answer from accounts-contacts is reused.
const CACHE_TTL: Duration = Duration::from_secs(5);

type Key = (TenantId, Uuid, &'static str, Uuid);

/// The subject checks.
#[derive(Clone)]
pub struct Subjects {
    accounts: AccountsServiceClient<Channel>,
    cache: Arc<Mutex<HashMap<Key, Instant>>>,
}

/// A record type by name.
pub fn subject_type(name: &str) -> Option<&'static str> {
    SUBJECT_TYPES.iter().copied().find(|t| *t == name)
}

impl Subjects {
    pub fn new(accounts: AccountsServiceClient<Channel>) -> Self {
        Self {
            accounts,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether the record exists, is live, and the caller may read it.
    pub async fn readable(
        &self,
        db: &Db,
        caller: &Caller,
        access: &Access,
        kind: &'static str,
        id: Uuid,
    ) -> ApiResult<bool> {
        let key = (caller.tenant, caller.subject, kind, id);
        if let Ok(cache) = self.cache.lock()
            && cache.get(&key).is_some_and(|at| at.elapsed() < CACHE_TTL)
        {
            return Ok(true);
        }
        let ok = match kind {
            "account" => {
                let r = self
                    .accounts
                    .clone()
                    .get_account(crm_kit::access::Permissions::request(
                        caller,
                        apb::GetAccountRequest { id: id.to_string() },
                    ))
                    .await;
                answered(r)?
            }
            "contact" => {
                let r = self
                    .accounts
                    .clone()
                    .get_contact(crm_kit::access::Permissions::request(
                        caller,
                        apb::GetContactRequest { id: id.to_string() },
                    ))
                    .await;
                answered(r)?
            }
            "opportunity" | "lead" | "ticket" => {
                let Ok(reach) = access.require(kind, "read") else {
                    return Ok(false);
                };
                let tx = db.tenant_tx(caller.tenant).await?;
                let r = store::record(&tx, kind, id).await?;
                tx.commit().await?;
                r.is_some_and(|r| !r.deleted && reach.covers(r.owner_user_id))
            }
            _ => false,
        };
        if ok && let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, at| at.elapsed() < CACHE_TTL);
            }
            cache.insert(key, Instant::now());
        }
        Ok(ok)
    }
}

/// A Get answer as "readable": not found (or not allowed) is no; other failures are errors.
fn answered<T>(r: Result<tonic::Response<T>, tonic::Status>) -> ApiResult<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::NotFound | tonic::Code::PermissionDenied
            ) =>
        {
            Ok(false)
        }
        Err(s) => {
            let e = ApiError::from_status(&s);
            if e.code == crm_kit::ErrorCode::Internal {
                Err(ApiError::new(
                    crm_kit::ErrorCode::Unavailable,
                    "accounts-contacts is unavailable",
                ))
            } else {
                Err(e)
            }
        }
    }
}
