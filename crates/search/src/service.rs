//! The gRPC service: search with the caller's permissions, rebuilds from the owning services,
//! and drift checks against them.

use std::{cmp::Ordering, sync::Arc};

use crm_kit::{
    ApiError, ApiResult, Caller, Db,
    access::{Access, Permissions, Scope as Grant},
};
use crm_proto::{
    accounts::{self as apb, accounts_service_client::AccountsServiceClient},
    pipeline::{self as ppb, pipeline_service_client::PipelineServiceClient},
    search::{self as pb, search_service_server::SearchService},
};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    index::{self, Observation, Scope},
    kinds::{API_TYPES, KINDS, Kind},
    score::{self, MAX_QUERY_CHARS, Query},
};

/// Hits returned when the request names no page size.
pub const DEFAULT_LIMIT: i32 = 20;
/// Most hits one request may ask for.
pub const MAX_LIMIT: i32 = 100;
/// Records read per page from an owning service during a rebuild.
const SOURCE_PAGE: i32 = 200;

/// The search service.
#[derive(Clone)]
pub struct Search {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    perms: Permissions,
    accounts: AccountsServiceClient<Channel>,
    pipeline: PipelineServiceClient<Channel>,
}

/// One record read from its owning service: id, version and its fields by REST name.
type SourceRecord = (Uuid, i64, Map<String, Value>);

fn put(m: &mut Map<String, Value>, k: &str, v: &str) {
    let v = v.trim();
    m.insert(
        k.to_owned(),
        if v.is_empty() {
            Value::Null
        } else {
            Value::String(v.to_owned())
        },
    );
}

fn contact_record(c: apb::Contact) -> Option<SourceRecord> {
    let mut m = Map::new();
    put(&mut m, "firstName", &c.first_name);
    put(&mut m, "lastName", &c.last_name);
    put(&mut m, "email", &c.email);
    put(&mut m, "phone", &c.phone);
    put(&mut m, "phoneE164", &c.phone_e164);
    put(&mut m, "title", &c.title);
    put(&mut m, "accountId", &c.account_id);
    put(&mut m, "ownerUserId", &c.owner_user_id);
    m.insert("version".into(), c.version.into());
    Some((Uuid::parse_str(&c.id).ok()?, c.version, m))
}

fn account_record(a: apb::Account) -> Option<SourceRecord> {
    let mut m = Map::new();
    put(&mut m, "name", &a.name);
    put(&mut m, "website", &a.website);
    put(&mut m, "industry", &a.industry);
    put(&mut m, "ownerUserId", &a.owner_user_id);
    m.insert("version".into(), a.version.into());
    Some((Uuid::parse_str(&a.id).ok()?, a.version, m))
}

fn opportunity_record(o: ppb::Opportunity) -> Option<SourceRecord> {
    let mut m = Map::new();
    put(&mut m, "name", &o.name);
    put(&mut m, "stage", &o.stage);
    put(&mut m, "accountId", &o.account_id);
    put(&mut m, "ownerUserId", &o.owner_user_id);
    m.insert("version".into(), o.version.into());
    Some((Uuid::parse_str(&o.id).ok()?, o.version, m))
}

fn lead_record(l: ppb::Lead) -> Option<SourceRecord> {
    let mut m = Map::new();
    put(&mut m, "firstName", &l.first_name);
    put(&mut m, "lastName", &l.last_name);
    put(&mut m, "email", &l.email);
    put(&mut m, "company", &l.company);
    put(&mut m, "ownerUserId", &l.owner_user_id);
    m.insert("version".into(), l.version.into());
    Some((Uuid::parse_str(&l.id).ok()?, l.version, m))
}

fn ticket_record(t: ppb::Ticket) -> Option<SourceRecord> {
    let mut m = Map::new();
    put(&mut m, "subject", &t.subject);
    put(&mut m, "description", &t.description);
    put(&mut m, "accountId", &t.account_id);
    put(&mut m, "assigneeUserId", &t.assignee_user_id);
    m.insert("version".into(), t.version.into());
    Some((Uuid::parse_str(&t.id).ok()?, t.version, m))
}

/// Validated search arguments.
#[derive(Debug)]
pub struct SearchArgs {
    pub query: Query,
    /// The kinds asked for, each once; all of them when none is named.
    pub kinds: Vec<&'static Kind>,
    pub limit: usize,
}

/// Checks a search request; errors name the gRPC field.
pub fn validate(r: &pb::SearchRequest) -> ApiResult<SearchArgs> {
    let mut errors = crm_kit::error::Violations::new();
    errors.text("query", &r.query);
    let query = Query::parse(&r.query);
    if query.is_none() {
        errors.add("query", "must not be empty");
    }
    if r.query.chars().count() > MAX_QUERY_CHARS {
        errors.add(
            "query",
            format!("must be at most {MAX_QUERY_CHARS} characters"),
        );
    }
    let kinds = kinds_of(&r.types, API_TYPES).unwrap_or_else(|e| {
        errors.add("types", e);
        Vec::new()
    });
    let limit = match r.page_size {
        0 => DEFAULT_LIMIT,
        n if (1..=MAX_LIMIT).contains(&n) => n,
        _ => {
            errors.add("page_size", format!("must be between 1 and {MAX_LIMIT}"));
            0
        }
    };
    errors.finish()?;
    let query = query.ok_or_else(|| ApiError::invalid("query", "must not be empty"))?;
    Ok(SearchArgs {
        query,
        kinds,
        limit: limit as usize,
    })
}

/// The indexed kinds among `types` (all when empty); an error names a type not in `known`.
fn kinds_of(types: &[String], known: &[&str]) -> Result<Vec<&'static Kind>, String> {
    if types.is_empty() {
        return Ok(KINDS.to_vec());
    }
    let mut out = Vec::new();
    for t in types {
        if !known.contains(&t.as_str()) {
            return Err(format!("unknown type {t:?}; one of {}", known.join(", ")));
        }
        if let Some(k) = KINDS.iter().copied().find(|k| k.name == t)
            && !out.iter().any(|o: &&Kind| o.name == k.name)
        {
            out.push(k);
        }
    }
    Ok(out)
}

/// The fields of a kind the caller may see.
fn visible(access: &Access, kind: &Kind) -> Vec<&'static str> {
    kind.fields
        .iter()
        .filter(|f| !f.from.iter().any(|r| access.is_hidden(kind.name, r)))
        .map(|f| f.name)
        .collect()
}

impl Search {
    /// The service over its dependencies.
    pub fn new(
        db: Db,
        perms: Permissions,
        accounts: AccountsServiceClient<Channel>,
        pipeline: PipelineServiceClient<Channel>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                perms,
                accounts,
                pipeline,
            }),
        }
    }

    /// Records the caller may read that match, best first.
    pub async fn search(&self, caller: &Caller, args: SearchArgs) -> ApiResult<Vec<pb::SearchHit>> {
        let access = self.inner.perms.of(caller).await?;
        let scopes: Vec<Scope> = args
            .kinds
            .iter()
            .filter_map(|k| {
                let reach = access.require(k.name, "read").ok()?;
                Some(Scope {
                    kind: k,
                    reach,
                    visible: visible(&access, k),
                })
            })
            .collect();
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.inner.db.tenant_tx(caller.tenant).await?;
        let found = index::candidates(&tx, &scopes, &args.query).await?;
        tx.rollback().await?;
        let mut hits: Vec<(f64, pb::SearchHit)> = found
            .into_iter()
            .filter_map(|c| {
                let scope = scopes.iter().find(|s| s.kind.name == c.kind.name)?;
                let s = score::score(c.kind, &scope.visible, &c.folded, &args.query);
                (s > 0.0).then(|| {
                    let shown = |f: &str| {
                        scope
                            .visible
                            .contains(&f)
                            .then(|| c.fields.get(f).and_then(Value::as_str))
                            .flatten()
                            .map(str::to_owned)
                    };
                    let subtitle = c.kind.subtitle.iter().find_map(|f| shown(f));
                    (
                        s,
                        pb::SearchHit {
                            r#type: c.kind.name.to_owned(),
                            id: c.id.to_string(),
                            title: shown(c.kind.title).unwrap_or_default(),
                            subtitle: subtitle.unwrap_or_default(),
                            score: (s * 1000.0).round() / 1000.0,
                        },
                    )
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then_with(|| a.1.title.cmp(&b.1.title))
                .then_with(|| a.1.id.cmp(&b.1.id))
        });
        hits.truncate(args.limit);
        Ok(hits.into_iter().map(|(_, h)| h).collect())
    }

    /// Refuses callers who cannot see every record and field of the kinds.
    fn check_admin(access: &Access, kinds: &[&Kind]) -> ApiResult<()> {
        for k in kinds {
            if access.scope(k.name, "read") != Some(Grant::All)
                || visible(access, k).len() != k.fields.len()
            {
                return Err(ApiError::permission_denied(format!(
                    "rebuilding or checking the index needs read access to every {} and all its fields",
                    k.name
                )));
            }
        }
        Ok(())
    }

    /// One page of a kind's records from its owning service, read as the caller.
    async fn source_page(
        &self,
        caller: &Caller,
        kind: &Kind,
        page_token: String,
    ) -> ApiResult<(Vec<SourceRecord>, String)> {
        let mut client = self.inner.accounts.clone();
        let mut pipeline = self.inner.pipeline.clone();
        let status = |s: Status| ApiError::from_status(&s);
        let (records, next) = match kind.name {
            "opportunity" => {
                let r = pipeline
                    .list_opportunities(Permissions::request(
                        caller,
                        ppb::ListOpportunitiesRequest {
                            page_size: SOURCE_PAGE,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(status)?
                    .into_inner();
                let records = r
                    .opportunities
                    .into_iter()
                    .filter_map(opportunity_record)
                    .collect();
                (records, r.next_page_token)
            }
            "lead" => {
                let r = pipeline
                    .list_leads(Permissions::request(
                        caller,
                        ppb::ListLeadsRequest {
                            page_size: SOURCE_PAGE,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(status)?
                    .into_inner();
                let records = r.leads.into_iter().filter_map(lead_record).collect();
                (records, r.next_page_token)
            }
            "ticket" => {
                let r = pipeline
                    .list_tickets(Permissions::request(
                        caller,
                        ppb::ListTicketsRequest {
                            page_size: SOURCE_PAGE,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(status)?
                    .into_inner();
                let records = r.tickets.into_iter().filter_map(ticket_record).collect();
                (records, r.next_page_token)
            }
            "contact" => {
                let r = client
                    .list_contacts(Permissions::request(
                        caller,
                        apb::ListContactsRequest {
                            page_size: SOURCE_PAGE,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(|s| ApiError::from_status(&s))?
                    .into_inner();
                let records = r.contacts.into_iter().filter_map(contact_record).collect();
                (records, r.next_page_token)
            }
            "account" => {
                let r = client
                    .list_accounts(Permissions::request(
                        caller,
                        apb::ListAccountsRequest {
                            page_size: SOURCE_PAGE,
                            page_token,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(|s| ApiError::from_status(&s))?
                    .into_inner();
                let records = r.accounts.into_iter().filter_map(account_record).collect();
                (records, r.next_page_token)
            }
            other => {
                return Err(ApiError::internal(format!("no source for {other}")));
            }
        };
        Ok((records, next))
    }

    /// Rebuilds the caller's tenant's documents of `kinds` from the owning services: upserts
    /// in place, then marks deleted what the source no longer has. Answers stay available
    /// throughout. Returns (kind, live documents, records seen).
    pub async fn reindex(
        &self,
        caller: &Caller,
        types: &[String],
    ) -> ApiResult<Vec<(&'static Kind, i64, i64)>> {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        let kinds = kinds_of(types, &names).map_err(|e| ApiError::invalid("types", e))?;
        let access = self.inner.perms.of(caller).await?;
        Self::check_admin(&access, &kinds)?;
        let mut out = Vec::new();
        for kind in kinds {
            let generation = Uuid::now_v7();
            let started = index::now(&self.inner.db).await?;
            let mut token = String::new();
            let mut seen = 0i64;
            loop {
                let (records, next) = self.source_page(caller, kind, token).await?;
                let tx = self.inner.db.tenant_tx(caller.tenant).await?;
                for (id, version, record) in records {
                    seen += 1;
                    index::apply(
                        &tx,
                        Observation {
                            kind,
                            id,
                            version,
                            record,
                            full: true,
                            deleted: Some(false),
                            reindex_gen: Some(generation),
                        },
                    )
                    .await?;
                }
                tx.commit().await?;
                if next.is_empty() {
                    break;
                }
                token = next;
            }
            let tx = self.inner.db.tenant_tx(caller.tenant).await?;
            let removed = index::sweep(&tx, kind, generation, started).await?;
            let live = index::count(&tx, kind).await?;
            tx.commit().await?;
            tracing::info!(tenant_id = %caller.tenant, kind = kind.name, seen, removed, live, "index rebuilt");
            record_drift(caller, kind, live, seen);
            out.push((kind, live, seen));
        }
        Ok(out)
    }

    /// Counts per kind in the index and in the owning services: (kind, indexed, source).
    pub async fn check_drift(&self, caller: &Caller) -> ApiResult<Vec<(&'static Kind, i64, i64)>> {
        let access = self.inner.perms.of(caller).await?;
        Self::check_admin(&access, KINDS)?;
        let mut out = Vec::new();
        for kind in KINDS.iter().copied() {
            let mut source = 0i64;
            let mut token = String::new();
            loop {
                let (records, next) = self.source_page(caller, kind, token).await?;
                source += records.len() as i64;
                if next.is_empty() {
                    break;
                }
                token = next;
            }
            let tx = self.inner.db.tenant_tx(caller.tenant).await?;
            let indexed = index::count(&tx, kind).await?;
            tx.rollback().await?;
            record_drift(caller, kind, indexed, source);
            out.push((kind, indexed, source));
        }
        Ok(out)
    }
}

/// `crm_search_drift{tenant,type}`: documents in the index minus records in the source.
fn record_drift(caller: &Caller, kind: &Kind, indexed: i64, source: i64) {
    metrics::gauge!("crm_search_drift", "tenant" => caller.tenant.to_string(), "type" => kind.name)
        .set((indexed - source) as f64);
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SearchService for Search {
    async fn search(&self, req: Request<pb::SearchRequest>) -> R<pb::SearchResponse> {
        let c = crm_kit::auth::caller(&req)?;
        let args = validate(req.get_ref())?;
        let hits = Search::search(self, &c, args).await?;
        Ok(Response::new(pb::SearchResponse { hits }))
    }

    async fn reindex(&self, req: Request<pb::ReindexRequest>) -> R<pb::ReindexResponse> {
        let c = crm_kit::auth::caller(&req)?;
        let types = req.into_inner().types;
        // A rebuild runs on its own task: if the call times out or the client goes away,
        // it still finishes (and logs "index rebuilt") instead of stopping half-way.
        let this = self.clone();
        let done = tokio::spawn(async move { Search::reindex(&this, &c, &types).await })
            .await
            .map_err(ApiError::internal)??;
        Ok(Response::new(pb::ReindexResponse {
            counts: done
                .into_iter()
                .map(|(k, live, _)| pb::TypeCount {
                    r#type: k.name.to_owned(),
                    count: live,
                })
                .collect(),
        }))
    }

    async fn check_drift(&self, req: Request<pb::CheckDriftRequest>) -> R<pb::CheckDriftResponse> {
        let c = crm_kit::auth::caller(&req)?;
        let drifts = Search::check_drift(self, &c).await?;
        Ok(Response::new(pb::CheckDriftResponse {
            drifts: drifts
                .into_iter()
                .map(|(k, indexed, source)| pb::TypeDrift {
                    r#type: k.name.to_owned(),
                    indexed,
                    source,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str, types: &[&str], size: i32) -> pb::SearchRequest {
        pb::SearchRequest {
            query: q.into(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            page_size: size,
        }
    }

    fn field_of(e: ApiError) -> Vec<String> {
        e.fields.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn bad_requests_name_the_field() {
        assert_eq!(
            field_of(validate(&req(" ", &[], 0)).unwrap_err()),
            ["query"]
        );
        assert_eq!(
            field_of(validate(&req(&"a".repeat(201), &[], 0)).unwrap_err()),
            ["query"]
        );
        assert_eq!(
            field_of(validate(&req("a", &["contact", "planet"], 0)).unwrap_err()),
            ["types"]
        );
        assert_eq!(
            field_of(validate(&req("a", &[], 101)).unwrap_err()),
            ["page_size"]
        );
        let ok = validate(&req("a", &["ticket", "account", "account"], 0)).unwrap();
        assert_eq!(ok.limit, 20);
        assert_eq!(ok.kinds.len(), 2, "each named type once");
    }
}
