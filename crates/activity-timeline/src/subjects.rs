//! Whether a record exists and the caller may read it, asked of the service that owns it over
//! gRPC with the caller's own token, so that service's permissions apply: accounts and
//! contacts of accounts-contacts, opportunities, leads and tickets of pipeline. A yes is
//! reused for a few seconds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crm_kit::{ApiError, ApiResult, Caller, TenantId, access::Permissions};
use crm_proto::{
    accounts::{self as apb, accounts_service_client::AccountsServiceClient},
    pipeline::{self as ppb, pipeline_service_client::PipelineServiceClient},
};
use tonic::transport::Channel;
use uuid::Uuid;

/// Record types an activity can be about and that have a timeline.
pub const SUBJECT_TYPES: &[&str] = &["account", "contact", "opportunity", "lead", "ticket"];

/// How long a positive answer is reused.
const CACHE_TTL: Duration = Duration::from_secs(5);

type Key = (TenantId, Uuid, &'static str, Uuid);

/// The subject checks.
#[derive(Clone)]
pub struct Subjects {
    accounts: AccountsServiceClient<Channel>,
    pipeline: PipelineServiceClient<Channel>,
    cache: Arc<Mutex<HashMap<Key, Instant>>>,
}

/// A record type by name.
pub fn subject_type(name: &str) -> Option<&'static str> {
    SUBJECT_TYPES.iter().copied().find(|t| *t == name)
}

impl Subjects {
    pub fn new(
        accounts: AccountsServiceClient<Channel>,
        pipeline: PipelineServiceClient<Channel>,
    ) -> Self {
        Self {
            accounts,
            pipeline,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether the record exists, is live, and the caller may read it.
    pub async fn readable(&self, caller: &Caller, kind: &'static str, id: Uuid) -> ApiResult<bool> {
        let key = (caller.tenant, caller.subject, kind, id);
        if let Ok(cache) = self.cache.lock()
            && cache.get(&key).is_some_and(|at| at.elapsed() < CACHE_TTL)
        {
            return Ok(true);
        }
        let id_s = id.to_string();
        let ok = match kind {
            "account" => answered(
                "accounts-contacts",
                self.accounts
                    .clone()
                    .get_account(Permissions::request(
                        caller,
                        apb::GetAccountRequest { id: id_s },
                    ))
                    .await,
            )?,
            "contact" => answered(
                "accounts-contacts",
                self.accounts
                    .clone()
                    .get_contact(Permissions::request(
                        caller,
                        apb::GetContactRequest { id: id_s },
                    ))
                    .await,
            )?,
            "opportunity" => answered(
                "pipeline",
                self.pipeline
                    .clone()
                    .get_opportunity(Permissions::request(
                        caller,
                        ppb::GetOpportunityRequest { id: id_s },
                    ))
                    .await,
            )?,
            "lead" => answered(
                "pipeline",
                self.pipeline
                    .clone()
                    .get_lead(Permissions::request(
                        caller,
                        ppb::GetLeadRequest { id: id_s },
                    ))
                    .await,
            )?,
            "ticket" => answered(
                "pipeline",
                self.pipeline
                    .clone()
                    .get_ticket(Permissions::request(
                        caller,
                        ppb::GetTicketRequest { id: id_s },
                    ))
                    .await,
            )?,
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
fn answered<T>(service: &str, r: Result<tonic::Response<T>, tonic::Status>) -> ApiResult<bool> {
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
                    format!("{service} is unavailable"),
                ))
            } else {
                Err(e)
            }
        }
    }
}
