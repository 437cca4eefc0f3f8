//! Custom fields of opportunities. accounts-contacts keeps every tenant's definitions (object
//! type "opportunity"); this service reads them over gRPC, as the caller, and keeps them per
//! tenant for a short while so a page of writes costs one call. Values are checked with
//! `crm_kit::custom`, the same rules accounts and contacts follow.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crm_kit::{
    ApiError, ApiResult, Caller, ErrorCode, TenantId, access::Permissions, custom::Definition,
};
use crm_proto::accounts::{self as apb, accounts_service_client::AccountsServiceClient};
use tonic::transport::Channel;

/// The object type of opportunities' definitions.
pub const OBJECT_TYPE: &str = "opportunity";

/// How long a tenant's definitions are used before they are read again. A key the cached
/// definitions do not know is always looked up afresh, so a new field works at once; a
/// changed or removed one takes up to this long to apply.
pub const DEFINITIONS_TTL: Duration = Duration::from_secs(30);

/// Most tenants kept before expired entries are swept.
const MAX_TENANTS: usize = 10_000;

type Entries = HashMap<TenantId, (Instant, Arc<Vec<Definition>>)>;

/// The tenants' opportunity definitions, read from accounts-contacts and kept briefly.
#[derive(Clone)]
pub struct Definitions {
    accounts: AccountsServiceClient<Channel>,
    cache: Arc<Mutex<Entries>>,
    ttl: Duration,
}

impl Definitions {
    /// Definitions read through `accounts`.
    pub fn new(accounts: AccountsServiceClient<Channel>) -> Self {
        Self {
            accounts,
            cache: Arc::new(Mutex::new(HashMap::new())),
            ttl: DEFINITIONS_TTL,
        }
    }

    fn cached(&self, tenant: TenantId) -> Option<Arc<Vec<Definition>>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&tenant)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, defs)| defs.clone())
    }

    /// The caller's tenant's definitions, read afresh.
    async fn fetch(&self, caller: &Caller) -> ApiResult<Arc<Vec<Definition>>> {
        let res = self
            .accounts
            .clone()
            .list_custom_fields(Permissions::request(
                caller,
                apb::ListCustomFieldsRequest {
                    object_type: OBJECT_TYPE.into(),
                },
            ))
            .await
            .map_err(|s| {
                let e = ApiError::from_status(&s);
                if e.code == ErrorCode::Internal {
                    ApiError::new(ErrorCode::Unavailable, "accounts-contacts is unavailable")
                } else {
                    e
                }
            })?
            .into_inner();
        let defs: Arc<Vec<Definition>> = Arc::new(
            res.custom_fields
                .iter()
                .filter(|f| f.object_type == OBJECT_TYPE)
                .filter_map(Definition::from_pb)
                .collect(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > MAX_TENANTS {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        cache.insert(caller.tenant, (Instant::now(), defs.clone()));
        Ok(defs)
    }

    /// The caller's tenant's definitions, covering `keys` when the tenant defines them: the
    /// cached ones, unless they are old or miss one of the keys (a value of a field defined
    /// moments ago, or a stored value whose field this copy has not seen yet).
    pub async fn covering<'a>(
        &self,
        caller: &Caller,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> ApiResult<Arc<Vec<Definition>>> {
        if let Some(defs) = self.cached(caller.tenant) {
            let mut keys = keys.into_iter();
            if keys.all(|k| defs.iter().any(|d| &d.key == k)) {
                return Ok(defs);
            }
        }
        self.fetch(caller).await
    }
}
