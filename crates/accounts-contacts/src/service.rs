//! The accounts and contacts service, served over gRPC as crm.accounts.v1.
//!
//! Accounts and contacts share one record model ([`store::Object`]); the operations here are
//! written once over it: permissions (scope as a SQL predicate, field rules), validation and
//! normalisation, optimistic concurrency, soft delete, keyset lists and outbox events.

use std::{collections::HashMap, sync::Arc};

use crm_bus::Event;
use crm_kit::{
    ApiError, ApiResult, Caller, Db, ErrorCode, TenantId, TenantTx,
    error::{FieldViolation, Violations},
    idempotency,
    paging::{PageTokens, page_size},
    rpc::{etag, fingerprint, map_to_struct, parse_etag, path_id, struct_to_map, ts},
};
use crm_proto::{
    accounts::{self as pb, accounts_service_server::AccountsService},
    identity as idpb,
};
use regex::Regex;
use serde_json::{Map, Value as Json, json};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    access::{Access, Permissions, Reach},
    custom::{self, FieldType},
    filter::{self, Schema},
    store::{self, ACCOUNT, CONTACT, ListQuery, ListSort, Object, Record},
};

/// The event source name.
const SERVICE: &str = "accounts-contacts";
/// Longest name-like value (names, titles, industries).
const MAX_TEXT: usize = 200;
/// Most ids in one bulk or batch call.
pub const MAX_BULK: usize = 1_000;
/// Longest `q`.
const MAX_QUERY: usize = 200;

/// The service's state.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    perms: Permissions,
    pages: PageTokens,
    email_re: Regex,
}

fn check_version(etag_in: &str, version: i64) -> ApiResult<()> {
    match parse_etag(etag_in)? {
        Some(v) if v != version => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("the record changed: it is at version {version}"),
        )),
        _ => Ok(()),
    }
}

fn empty_none(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

// ---- what a caller sends, per record type -------------------------------------------------

/// A create or update of a record, in proto names.
#[derive(Default)]
struct Input {
    /// Data values by proto name (only the ones given).
    values: Vec<(&'static str, String)>,
    custom: Map<String, Json>,
}

/// The record as the caller may see it: hidden fields blanked and named.
struct Visible {
    values: HashMap<&'static str, String>,
    custom: Option<prost_types::Struct>,
    redacted: Vec<String>,
}

fn visible(access: &Access, obj: &Object, r: &Record) -> Visible {
    let mut redacted = Vec::new();
    let mut values = HashMap::new();
    for c in obj.columns.iter().chain(obj.derived) {
        if access.is_hidden(obj.name, c.rest) {
            redacted.push(c.rest.to_owned());
        } else {
            values.insert(c.grpc, r.get(c.column).unwrap_or_default().to_owned());
        }
    }
    let custom = if access.is_hidden(obj.name, "custom") {
        redacted.push("custom".into());
        None
    } else {
        let mut m = Map::new();
        for (k, v) in &r.custom {
            let name = format!("custom.{k}");
            if access.is_hidden(obj.name, &name) {
                redacted.push(name);
            } else {
                m.insert(k.clone(), v.clone());
            }
        }
        Some(map_to_struct(&m))
    };
    Visible {
        values,
        custom,
        redacted,
    }
}

fn account_pb(access: &Access, r: &Record) -> pb::Account {
    let mut v = visible(access, &ACCOUNT, r);
    let mut take = |k: &str| v.values.remove(k).unwrap_or_default();
    pb::Account {
        id: r.id.to_string(),
        name: take("name"),
        website: take("website"),
        industry: take("industry"),
        owner_user_id: take("owner_user_id"),
        custom: v.custom,
        version: r.version,
        etag: etag(r.version),
        created_by: r.created_by.map(|u| u.to_string()).unwrap_or_default(),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
        redacted_fields: v.redacted,
    }
}

fn contact_pb(access: &Access, r: &Record) -> pb::Contact {
    let mut v = visible(access, &CONTACT, r);
    let mut take = |k: &str| v.values.remove(k).unwrap_or_default();
    pb::Contact {
        id: r.id.to_string(),
        first_name: take("first_name"),
        last_name: take("last_name"),
        email: take("email"),
        phone: take("phone"),
        phone_e164: take("phone_e164"),
        title: take("title"),
        account_id: take("account_id"),
        owner_user_id: take("owner_user_id"),
        custom: v.custom,
        version: r.version,
        etag: etag(r.version),
        created_by: r.created_by.map(|u| u.to_string()).unwrap_or_default(),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
        redacted_fields: v.redacted,
        link_role: r.link_role.clone().unwrap_or_default(),
    }
}

fn custom_field_pb(r: &store::CustomFieldRow) -> pb::CustomField {
    let t =
        FieldType::parse(&r.field_type).map_or(pb::CustomFieldType::Unspecified, FieldType::to_pb);
    pb::CustomField {
        id: r.id.to_string(),
        object_type: r.object_type.clone(),
        key: r.key.clone(),
        label: r.label.clone(),
        r#type: t as i32,
        options: r.option_list(),
        required: r.required,
        version: r.version,
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
    }
}

/// The E.164 form of a phone number, when it parses (international numbers with `+`).
pub fn e164(phone: &str) -> Option<String> {
    let n = phonenumber::parse(None, phone).ok()?;
    phonenumber::is_valid(&n).then(|| n.format().mode(phonenumber::Mode::E164).to_string())
}

/// A page position: the last row's sort key and id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Position {
    k: Option<String>,
    id: Uuid,
}

/// What a list's page tokens are bound to besides the tenant: the object type and the query.
pub fn list_fingerprint(object: &str, filter: &str, order_by: &str, query: &str) -> String {
    // A custom field's sort key is its indexed form (`accounts.custom_sort.v`); the mark
    // refuses, as foreign, a token made when it was the raw JSON value.
    let mark = if order_by.trim_start().starts_with("custom.") {
        "|indexed"
    } else {
        ""
    };
    format!(
        "{object}|{}|{}|{}{mark}",
        filter.trim(),
        order_by.trim(),
        query.trim()
    )
}

/// The page token that resumes a list after the row with this sort key (as text) and id;
/// the service hands these out in `next_page_token` (benchmarks make deep ones directly).
pub fn list_page_token(
    pages: &PageTokens,
    tenant: TenantId,
    fingerprint: &str,
    sort_key: Option<String>,
    id: Uuid,
) -> ApiResult<String> {
    let pos = serde_json::to_string(&Position { k: sort_key, id }).map_err(ApiError::internal)?;
    Ok(pages.encode(tenant, fingerprint, &pos))
}

/// The list arguments common to accounts and contacts.
#[derive(Clone, Copy)]
pub struct ListArgs<'a> {
    pub page_size: i32,
    pub page_token: &'a str,
    pub filter: &'a str,
    pub order_by: &'a str,
    pub query: &'a str,
}

impl Accounts {
    /// The service over its dependencies.
    pub fn new(db: Db, perms: Permissions, pages: PageTokens) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                perms,
                pages,
                email_re: Regex::new(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")?,
            }),
        })
    }

    async fn tx(&self, tenant: TenantId) -> ApiResult<TenantTx> {
        Ok(self.inner.db.tenant_tx(tenant).await?)
    }

    async fn access(&self, caller: &Caller) -> ApiResult<Arc<Access>> {
        self.inner.perms.of(caller).await
    }

    /// Appends an event to the outbox; the entity type is the event type's prefix.
    async fn emit(
        &self,
        tx: &TenantTx,
        caller: &Caller,
        event_type: &str,
        id: Uuid,
        before: Option<Json>,
        after: Option<Json>,
    ) -> ApiResult<()> {
        let entity_type = event_type.split('.').next().unwrap_or(event_type);
        let e = Event::new(
            SERVICE,
            event_type,
            caller.tenant,
            Some(caller.subject),
            entity_type,
            id,
            before,
            after,
        );
        crm_bus::outbox::append(tx, store::SCHEMA, &e)
            .await
            .map_err(ApiError::internal)
    }

    /// Checks and normalises one data value; empty optional values become NULL.
    fn normalize(&self, column: &str, raw: &str, v: &mut Violations) -> Option<String> {
        v.text(column, raw);
        let s = raw.trim();
        match column {
            "name" | "first_name" | "last_name" => {
                if s.is_empty() {
                    v.add(column, "is required");
                } else if s.chars().count() > MAX_TEXT {
                    v.add(column, format!("must be at most {MAX_TEXT} characters"));
                }
                Some(s.to_owned())
            }
            _ if s.is_empty() => None,
            "email" => {
                let e = s.to_lowercase();
                if e.len() > 254 || !self.inner.email_re.is_match(&e) {
                    v.add(column, "must be a valid e-mail address");
                }
                Some(e)
            }
            "phone" => {
                let digits = s.chars().filter(char::is_ascii_digit).count();
                let allowed = s
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().x/".contains(c) || c.is_alphabetic());
                if s.chars().count() > 50 || digits < 3 || !allowed {
                    v.add(column, "must be a phone number (digits, spaces, + - ( ) .)");
                }
                Some(s.to_owned())
            }
            "website" => {
                let with_scheme = if s.contains("://") {
                    s.to_owned()
                } else {
                    format!("https://{s}")
                };
                match url::Url::parse(&with_scheme) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.host_str().is_some_and(|h| h.contains('.'))
                            && with_scheme.len() <= 2048 =>
                    {
                        Some(with_scheme)
                    }
                    _ => {
                        v.add(column, "must be a web address such as https://example.com");
                        None
                    }
                }
            }
            "account_id" | "owner_user_id" => {
                if Uuid::parse_str(s).is_err() {
                    v.add(column, "must be an id");
                    None
                } else {
                    Some(s.to_lowercase())
                }
            }
            _ => {
                if s.chars().count() > MAX_TEXT {
                    v.add(column, format!("must be at most {MAX_TEXT} characters"));
                }
                Some(s.to_owned())
            }
        }
    }

    /// Refuses an owner the caller may not assign, or who is not a user of the tenant.
    async fn check_owner(
        &self,
        caller: &Caller,
        reach: &Reach,
        owner: Option<Uuid>,
    ) -> ApiResult<()> {
        self.inner
            .perms
            .check_assignable(caller, reach, "owner_user_id", owner)
            .await
    }

    // ---- generic record operations ----------------------------------------------------

    /// A live record the caller may read, or "not found".
    async fn read_record(
        &self,
        caller: &Caller,
        obj: &'static Object,
        id: &str,
    ) -> ApiResult<(Arc<Access>, Record)> {
        let access = self.access(caller).await?;
        let reach = access
            .require(obj.name, "read")
            .map_err(|_| ApiError::not_found(obj.name))?;
        let id = path_id(obj.name, id)?;
        let tx = self.tx(caller.tenant).await?;
        let r = store::fetch(&tx, obj, id, false, false).await?;
        tx.commit().await?;
        match r {
            Some(r) if reach.covers(r.owner()) => Ok((access, r)),
            _ => Err(ApiError::not_found(obj.name)),
        }
    }

    async fn list_records(
        &self,
        caller: &Caller,
        obj: &'static Object,
        a: ListArgs<'_>,
    ) -> ApiResult<(Arc<Access>, Vec<Record>, String)> {
        let access = self.access(caller).await?;
        let reach = access.require(obj.name, "read")?;
        let size = page_size(a.page_size, "page_size")?;
        let query = a.query.trim();
        let mut v = Violations::new();
        v.text("query", query);
        v.check(
            query.chars().count() > MAX_QUERY,
            "query",
            "must be at most 200 characters",
        );
        v.text("order_by", a.order_by);
        v.finish()?;
        let fingerprint = list_fingerprint(obj.name, a.filter, a.order_by, query);
        let after = self
            .inner
            .pages
            .decode(a.page_token, caller.tenant, &fingerprint, "page_token")?
            .map(|s| serde_json::from_str::<Position>(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))?;
        let tx = self.tx(caller.tenant).await?;
        // Definitions matter only to a filter or sort naming `custom.<key>`; most lists name
        // none and skip the statement.
        let defs = if a.filter.contains("custom") || a.order_by.contains("custom") {
            store::definitions(&tx, obj.name).await?
        } else {
            Vec::new()
        };
        let hidden = |f: &str| access.is_hidden(obj.name, f);
        let schema = Schema {
            fields: obj.filters,
            custom: &defs,
            hidden: &hidden,
            custom_index: Some(store::custom_index(obj)),
        };
        let matches = if query.is_empty() {
            None
        } else {
            store::text_matches(&tx, obj, &like_pattern(query)).await?
        };
        let q = list_query(
            obj,
            &schema,
            &reach,
            ListArgs {
                filter: a.filter,
                order_by: a.order_by,
                query,
                ..a
            },
            caller.tenant,
            after.map(|p| (p.k, p.id)),
            size + 1,
            matches.as_deref(),
        )?;
        let mut rows = store::list(&tx, obj, &q).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = list_page_token(
                    &self.inner.pages,
                    caller.tenant,
                    &fingerprint,
                    last.sort_key.clone(),
                    last.id,
                )?;
            }
        }
        Ok((access, rows, next))
    }

    /// Validates the data values of a create or update; returns them normalised by column.
    fn values(
        &self,
        obj: &Object,
        given: &[(&'static str, String)],
        v: &mut Violations,
    ) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        for (column, raw) in given {
            let value = self.normalize(column, raw, v);
            if *column == "phone" {
                out.push(("phone_e164", value.as_deref().and_then(e164)));
            }
            if let Some(c) = obj.column(column) {
                out.push((c.column, value));
            }
        }
        out
    }

    async fn create_record(
        &self,
        caller: &Caller,
        obj: &'static Object,
        input: Input,
        request_id: &str,
        fp: String,
    ) -> ApiResult<(Arc<Access>, Record)> {
        let access = self.access(caller).await?;
        let reach = access.require(obj.name, "create")?;
        let rest_names = input
            .values
            .iter()
            .filter(|(_, raw)| !raw.trim().is_empty())
            .filter_map(|(c, _)| obj.column(c).map(|c| c.rest.to_owned()))
            .chain(input.custom.keys().map(|k| format!("custom.{k}")))
            .collect::<Vec<_>>();
        access.check_writable(obj.name, rest_names.iter().map(String::as_str))?;
        let mut v = Violations::new();
        v.check(
            request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        let mut given = input.values;
        // Required columns are validated even when the caller left them out.
        for required in ["name", "first_name", "last_name"] {
            if obj.column(required).is_some() && !given.iter().any(|(c, _)| *c == required) {
                given.push((required, String::new()));
            }
        }
        let mut values: HashMap<&'static str, Option<String>> =
            self.values(obj, &given, &mut v).into_iter().collect();
        let owner = match values.get("owner_user_id").cloned().flatten() {
            Some(o) => Uuid::parse_str(&o).ok(),
            None if access.is_client => None,
            None => Some(caller.subject),
        };
        values.insert("owner_user_id", owner.map(|o| o.to_string()));
        let tx = self.tx(caller.tenant).await?;
        if !request_id.is_empty()
            && let Some(id) =
                idempotency::find(&tx, store::SCHEMA, obj.name, request_id, &fp).await?
        {
            let r = store::fetch(&tx, obj, id, false, false)
                .await?
                .ok_or_else(|| ApiError::not_found(obj.name))?;
            tx.commit().await?;
            return Ok((access, r));
        }
        let defs = store::definitions(&tx, obj.name).await?;
        let custom = custom::apply(&defs, &Map::new(), &input.custom, &mut v);
        if let Some(Some(account)) = values.get("account_id")
            && let Ok(account) = Uuid::parse_str(account)
            && !store::account_exists(&tx, account).await?
        {
            v.add("account_id", "no such account");
        }
        v.finish()?;
        self.check_owner(caller, &reach, owner).await?;
        let id = Uuid::now_v7();
        let r = store::insert(&tx, obj, id, &values, &custom, caller.subject).await?;
        self.emit(
            &tx,
            caller,
            &format!("{}.created", obj.name),
            id,
            None,
            Some(r.to_json(obj)),
        )
        .await?;
        if !request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, obj.name, request_id, &fp, id).await?;
        }
        tx.commit().await?;
        Ok((access, r))
    }

    async fn update_record(
        &self,
        caller: &Caller,
        obj: &'static Object,
        id: &str,
        mask: Option<prost_types::FieldMask>,
        input: Input,
        etag_in: &str,
    ) -> ApiResult<(Arc<Access>, Record)> {
        let access = self.access(caller).await?;
        let read = access
            .require(obj.name, "read")
            .map_err(|_| ApiError::not_found(obj.name))?;
        let id = path_id(obj.name, id)?;
        let paths = mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to change"));
        }
        let mut v = Violations::new();
        let mut rest_names = Vec::new();
        let mut custom_changes = Map::new();
        let mut replace_custom = false;
        let mut given = Vec::new();
        for p in &paths {
            if p == "custom" {
                replace_custom = true;
                rest_names.extend(input.custom.keys().map(|k| format!("custom.{k}")));
            } else if let Some(key) = p.strip_prefix("custom.") {
                custom_changes.insert(
                    key.to_owned(),
                    input.custom.get(key).cloned().unwrap_or(Json::Null),
                );
                rest_names.push(p.clone());
            } else if let Some(c) = obj.columns.iter().find(|c| c.grpc == p) {
                let raw = input
                    .values
                    .iter()
                    .find(|(k, _)| *k == c.grpc)
                    .map(|(_, raw)| raw.clone())
                    .unwrap_or_default();
                given.push((c.grpc, raw));
                rest_names.push(c.rest.to_owned());
            } else {
                v.add("update_mask", format!("unknown field {p:?}"));
            }
        }
        v.finish()?;
        let mut v = Violations::new();
        access.check_writable(obj.name, rest_names.iter().map(String::as_str))?;
        let changes = self.values(obj, &given, &mut v);
        let tx = self.tx(caller.tenant).await?;
        let Some(current) = store::fetch(&tx, obj, id, false, true).await? else {
            return Err(ApiError::not_found(obj.name));
        };
        if !read.covers(current.owner()) {
            return Err(ApiError::not_found(obj.name));
        }
        let update = access.require(obj.name, "update")?;
        if !update.covers(current.owner()) {
            return Err(ApiError::permission_denied(format!(
                "your role may not change this {}",
                obj.name
            )));
        }
        check_version(etag_in, current.version)?;
        let defs = store::definitions(&tx, obj.name).await?;
        if replace_custom {
            for k in current.custom.keys() {
                if !input.custom.contains_key(k) {
                    custom_changes.insert(k.clone(), Json::Null);
                }
            }
            for (k, val) in &input.custom {
                custom_changes.insert(k.clone(), val.clone());
            }
        }
        let custom = custom::apply(&defs, &current.custom, &custom_changes, &mut v);
        let changed: Vec<(&'static str, Option<String>)> = changes
            .into_iter()
            .filter(|(c, val)| current.get(c) != val.as_deref())
            .collect();
        if let Some((_, Some(account))) = changed.iter().find(|(c, _)| *c == "account_id")
            && let Ok(account) = Uuid::parse_str(account)
            && !store::account_exists(&tx, account).await?
        {
            v.add("account_id", "no such account");
        }
        v.finish()?;
        if let Some((_, owner)) = changed.iter().find(|(c, _)| *c == "owner_user_id") {
            let owner = owner.as_deref().and_then(|o| Uuid::parse_str(o).ok());
            self.check_owner(caller, &update, owner).await?;
        }
        let custom_changed = custom != current.custom;
        if changed.is_empty() && !custom_changed {
            tx.commit().await?;
            return Ok((access, current));
        }
        let r = store::update(
            &tx,
            obj,
            id,
            &changed,
            custom_changed.then_some(&custom),
            caller.subject,
        )
        .await?;
        let (before, after) = diff(obj, &current, &r);
        self.emit(
            &tx,
            caller,
            &format!("{}.updated", obj.name),
            id,
            Some(before),
            Some(after),
        )
        .await?;
        tx.commit().await?;
        Ok((access, r))
    }

    async fn delete_record(
        &self,
        caller: &Caller,
        obj: &'static Object,
        id: &str,
        etag_in: &str,
    ) -> ApiResult<()> {
        let access = self.access(caller).await?;
        let read = access
            .require(obj.name, "read")
            .map_err(|_| ApiError::not_found(obj.name))?;
        let id = path_id(obj.name, id)?;
        let tx = self.tx(caller.tenant).await?;
        let Some(current) = store::fetch(&tx, obj, id, false, true).await? else {
            return Err(ApiError::not_found(obj.name));
        };
        if !read.covers(current.owner()) {
            return Err(ApiError::not_found(obj.name));
        }
        if !access.require(obj.name, "delete")?.covers(current.owner()) {
            return Err(ApiError::permission_denied(format!(
                "your role may not delete this {}",
                obj.name
            )));
        }
        check_version(etag_in, current.version)?;
        store::set_deleted(&tx, obj, id, true, caller.subject).await?;
        self.emit(
            &tx,
            caller,
            &format!("{}.deleted", obj.name),
            id,
            Some(current.to_json(obj)),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn restore_record(
        &self,
        caller: &Caller,
        obj: &'static Object,
        id: &str,
    ) -> ApiResult<(Arc<Access>, Record)> {
        let access = self.access(caller).await?;
        let reach = access
            .require(obj.name, "delete")
            .map_err(|_| ApiError::not_found(obj.name))?;
        let id = path_id(obj.name, id)?;
        let tx = self.tx(caller.tenant).await?;
        let deleted = store::fetch(&tx, obj, id, true, true).await?;
        let r = match deleted {
            Some(d) if reach.covers(d.owner()) => {
                store::set_deleted(&tx, obj, id, false, caller.subject).await?;
                let r = store::fetch(&tx, obj, id, false, false)
                    .await?
                    .ok_or_else(|| ApiError::not_found(obj.name))?;
                self.emit(
                    &tx,
                    caller,
                    &format!("{}.restored", obj.name),
                    id,
                    None,
                    Some(r.to_json(obj)),
                )
                .await?;
                r
            }
            // Restoring a live record changes nothing.
            None => match store::fetch(&tx, obj, id, false, false).await? {
                Some(r) if reach.covers(r.owner()) => r,
                _ => return Err(ApiError::not_found(obj.name)),
            },
            Some(_) => return Err(ApiError::not_found(obj.name)),
        };
        tx.commit().await?;
        Ok((access, r))
    }

    // ---- accounts -----------------------------------------------------------------------

    pub async fn list_accounts(
        &self,
        caller: &Caller,
        r: pb::ListAccountsRequest,
    ) -> ApiResult<pb::ListAccountsResponse> {
        let (access, rows, next) = self
            .list_records(
                caller,
                &ACCOUNT,
                ListArgs {
                    page_size: r.page_size,
                    page_token: &r.page_token,
                    filter: &r.filter,
                    order_by: &r.order_by,
                    query: &r.query,
                },
            )
            .await?;
        Ok(pb::ListAccountsResponse {
            accounts: rows.iter().map(|r| account_pb(&access, r)).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_account(&self, caller: &Caller, id: &str) -> ApiResult<pb::Account> {
        let (access, r) = self.read_record(caller, &ACCOUNT, id).await?;
        Ok(account_pb(&access, &r))
    }

    pub async fn batch_get_accounts(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> ApiResult<Vec<pb::Account>> {
        if ids.len() > MAX_BULK {
            return Err(ApiError::invalid("ids", format!("at most {MAX_BULK} ids")));
        }
        let mut v = Violations::new();
        let parsed: Vec<Uuid> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let id = Uuid::parse_str(s).ok();
                v.check(id.is_none(), &format!("ids[{i}]"), "must be an id");
                id
            })
            .collect();
        v.finish()?;
        let access = self.access(caller).await?;
        let reach = access.require("account", "read")?;
        let tx = self.tx(caller.tenant).await?;
        let rows = store::fetch_many(&tx, &ACCOUNT, &parsed, &reach).await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| account_pb(&access, r)).collect())
    }

    fn account_input(
        name: Option<String>,
        website: Option<String>,
        industry: Option<String>,
        owner: Option<String>,
        custom: Option<prost_types::Struct>,
    ) -> Input {
        let mut values = Vec::new();
        for (k, v) in [
            ("name", name),
            ("website", website),
            ("industry", industry),
            ("owner_user_id", owner),
        ] {
            if let Some(v) = v {
                values.push((k, v));
            }
        }
        Input {
            values,
            custom: struct_to_map(custom),
        }
    }

    pub async fn create_account(
        &self,
        caller: &Caller,
        r: pb::CreateAccountRequest,
    ) -> ApiResult<pb::Account> {
        let fp = fingerprint(&pb::CreateAccountRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let input = Self::account_input(
            Some(r.name),
            Some(r.website),
            Some(r.industry),
            Some(r.owner_user_id).filter(|s| !s.is_empty()),
            r.custom,
        );
        let (access, rec) = self
            .create_record(caller, &ACCOUNT, input, &r.request_id, fp)
            .await?;
        Ok(account_pb(&access, &rec))
    }

    pub async fn update_account(
        &self,
        caller: &Caller,
        r: pb::UpdateAccountRequest,
    ) -> ApiResult<pb::Account> {
        let input = Self::account_input(
            Some(r.name),
            Some(r.website),
            Some(r.industry),
            Some(r.owner_user_id),
            r.custom,
        );
        let (access, rec) = self
            .update_record(caller, &ACCOUNT, &r.id, r.update_mask, input, &r.etag)
            .await?;
        Ok(account_pb(&access, &rec))
    }

    // ---- contacts -----------------------------------------------------------------------

    pub async fn list_contacts(
        &self,
        caller: &Caller,
        r: pb::ListContactsRequest,
    ) -> ApiResult<pb::ListContactsResponse> {
        let (access, rows, next) = self
            .list_records(
                caller,
                &CONTACT,
                ListArgs {
                    page_size: r.page_size,
                    page_token: &r.page_token,
                    filter: &r.filter,
                    order_by: &r.order_by,
                    query: &r.query,
                },
            )
            .await?;
        Ok(pb::ListContactsResponse {
            contacts: rows.iter().map(|r| contact_pb(&access, r)).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_contact(&self, caller: &Caller, id: &str) -> ApiResult<pb::Contact> {
        let (access, r) = self.read_record(caller, &CONTACT, id).await?;
        Ok(contact_pb(&access, &r))
    }

    #[allow(clippy::too_many_arguments)]
    fn contact_input(
        first_name: String,
        last_name: String,
        email: String,
        phone: String,
        title: String,
        account_id: String,
        owner: String,
        custom: Option<prost_types::Struct>,
    ) -> Input {
        Input {
            values: vec![
                ("first_name", first_name),
                ("last_name", last_name),
                ("email", email),
                ("phone", phone),
                ("title", title),
                ("account_id", account_id),
                ("owner_user_id", owner),
            ],
            custom: struct_to_map(custom),
        }
    }

    pub async fn create_contact(
        &self,
        caller: &Caller,
        r: pb::CreateContactRequest,
    ) -> ApiResult<pb::Contact> {
        let fp = fingerprint(&pb::CreateContactRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let mut input = Self::contact_input(
            r.first_name,
            r.last_name,
            r.email,
            r.phone,
            r.title,
            r.account_id,
            r.owner_user_id,
            r.custom,
        );
        input
            .values
            .retain(|(k, v)| !(*k == "owner_user_id" && v.is_empty()));
        let (access, rec) = self
            .create_record(caller, &CONTACT, input, &r.request_id, fp)
            .await?;
        Ok(contact_pb(&access, &rec))
    }

    pub async fn update_contact(
        &self,
        caller: &Caller,
        r: pb::UpdateContactRequest,
    ) -> ApiResult<pb::Contact> {
        let input = Self::contact_input(
            r.first_name,
            r.last_name,
            r.email,
            r.phone,
            r.title,
            r.account_id,
            r.owner_user_id,
            r.custom,
        );
        let (access, rec) = self
            .update_record(caller, &CONTACT, &r.id, r.update_mask, input, &r.etag)
            .await?;
        Ok(contact_pb(&access, &rec))
    }

    pub async fn bulk_update_contacts(
        &self,
        caller: &Caller,
        r: pb::BulkUpdateContactsRequest,
    ) -> ApiResult<Vec<pb::BulkResult>> {
        let action = pb::BulkAction::try_from(r.action).unwrap_or(pb::BulkAction::Unspecified);
        let mut v = Violations::new();
        v.check(
            action == pb::BulkAction::Unspecified,
            "action",
            "must be assign_owner or delete",
        );
        v.check(
            r.ids.is_empty() || r.ids.len() > MAX_BULK,
            "ids",
            "must list 1 to 1000 ids",
        );
        let mut ids = Vec::new();
        for (i, s) in r.ids.iter().enumerate() {
            match Uuid::parse_str(s) {
                Ok(id) if ids.contains(&id) => v.add(format!("ids[{i}]"), "is listed twice"),
                Ok(id) => ids.push(id),
                Err(_) => v.add(format!("ids[{i}]"), "must be an id"),
            }
        }
        let owner = if action == pb::BulkAction::AssignOwner {
            let o = Uuid::parse_str(r.owner_user_id.trim()).ok();
            v.check(o.is_none(), "owner_user_id", "must be an id");
            o
        } else {
            None
        };
        v.finish()?;
        let access = self.access(caller).await?;
        let read = access.require("contact", "read")?;
        let (verb, write) = match action {
            pb::BulkAction::AssignOwner => ("update", access.require("contact", "update")?),
            _ => ("delete", access.require("contact", "delete")?),
        };
        if owner.is_some() {
            self.check_owner(caller, &write, owner).await?;
        }
        let tx = self.tx(caller.tenant).await?;
        let found: HashMap<Uuid, Record> = store::fetch_many(&tx, &CONTACT, &ids, &read)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let mut results = Vec::with_capacity(ids.len());
        let mut done = Vec::new();
        for id in &ids {
            let result = |status: &str, message: &str| pb::BulkResult {
                id: id.to_string(),
                status: status.into(),
                message: message.into(),
            };
            let Some(current) = found.get(id) else {
                results.push(result("NOT_FOUND", "contact not found"));
                continue;
            };
            if !write.covers(current.owner()) {
                results.push(result(
                    "PERMISSION_DENIED",
                    &format!("your role may not {verb} this contact"),
                ));
                continue;
            }
            if let Some(owner) = owner {
                let changed = vec![("owner_user_id", Some(owner.to_string()))];
                if current.owner() != Some(owner) {
                    let r =
                        store::update(&tx, &CONTACT, *id, &changed, None, caller.subject).await?;
                    let (before, after) = diff(&CONTACT, current, &r);
                    self.emit(
                        &tx,
                        caller,
                        "contact.updated",
                        *id,
                        Some(before),
                        Some(after),
                    )
                    .await?;
                }
            } else {
                store::set_deleted(&tx, &CONTACT, *id, true, caller.subject).await?;
                self.emit(
                    &tx,
                    caller,
                    "contact.deleted",
                    *id,
                    Some(current.to_json(&CONTACT)),
                    None,
                )
                .await?;
            }
            done.push(id.to_string());
            results.push(result("ok", ""));
        }
        let kind = match action {
            pb::BulkAction::AssignOwner => "contact.bulk_assign_owner",
            _ => "contact.bulk_delete",
        };
        let detail = json!({
            "requested": ids.len(),
            "succeeded": done.len(),
            "ids": done,
            "ownerUserId": owner,
        });
        // One security event for the whole call, recorded before the change commits: a
        // bulk change that cannot be recorded does not happen.
        self.inner
            .perms
            .identity()
            .record_security_event(Permissions::request(
                caller,
                idpb::RecordSecurityEventRequest {
                    kind: kind.into(),
                    detail_json: detail.to_string(),
                    client_address: String::new(),
                },
            ))
            .await
            .map_err(|s| ApiError::from_status(&s))?;
        tx.commit().await?;
        Ok(results)
    }

    // ---- links --------------------------------------------------------------------------

    /// The account and contact of a link, after the caller's permissions: both readable,
    /// the account changeable.
    async fn link_parties(
        &self,
        caller: &Caller,
        tx: &TenantTx,
        account: &str,
        contact: &str,
    ) -> ApiResult<(Uuid, Uuid)> {
        let access = self.access(caller).await?;
        let not_found = |what: &str| ApiError::not_found(what);
        let account_read = access
            .require("account", "read")
            .map_err(|_| not_found("account"))?;
        let contact_read = access
            .require("contact", "read")
            .map_err(|_| not_found("contact"))?;
        let account_id = path_id("account", account)?;
        let contact_id = path_id("contact", contact)?;
        let a = store::fetch(tx, &ACCOUNT, account_id, false, false)
            .await?
            .filter(|a| account_read.covers(a.owner()))
            .ok_or_else(|| not_found("account"))?;
        store::fetch(tx, &CONTACT, contact_id, false, false)
            .await?
            .filter(|c| contact_read.covers(c.owner()))
            .ok_or_else(|| not_found("contact"))?;
        if !access.require("account", "update")?.covers(a.owner()) {
            return Err(ApiError::permission_denied(
                "your role may not change this account's contacts",
            ));
        }
        Ok((account_id, contact_id))
    }

    pub async fn link_contact(
        &self,
        caller: &Caller,
        r: pb::LinkContactRequest,
    ) -> ApiResult<pb::LinkContactResponse> {
        let role = r.role.trim();
        let mut v = Violations::new();
        v.text("role", role);
        v.check(
            role.chars().count() > 100,
            "role",
            "must be at most 100 characters",
        );
        v.finish()?;
        let role = (!role.is_empty()).then_some(role);
        let tx = self.tx(caller.tenant).await?;
        let (account, contact) = self
            .link_parties(caller, &tx, &r.account_id, &r.contact_id)
            .await?;
        let before = store::link(&tx, account, contact, role, caller.subject).await?;
        let link =
            |role: Option<&str>| json!({"accountId": account, "contactId": contact, "role": role});
        match before {
            Some(old) if old.as_deref() == role => {}
            Some(old) => {
                self.emit(
                    &tx,
                    caller,
                    "contact.linked",
                    contact,
                    Some(link(old.as_deref())),
                    Some(link(role)),
                )
                .await?
            }
            None => {
                self.emit(
                    &tx,
                    caller,
                    "contact.linked",
                    contact,
                    None,
                    Some(link(role)),
                )
                .await?
            }
        }
        tx.commit().await?;
        Ok(pb::LinkContactResponse {
            account_id: account.to_string(),
            contact_id: contact.to_string(),
            role: empty_none(role),
        })
    }

    pub async fn unlink_contact(
        &self,
        caller: &Caller,
        r: pb::UnlinkContactRequest,
    ) -> ApiResult<()> {
        let tx = self.tx(caller.tenant).await?;
        let (account, contact) = self
            .link_parties(caller, &tx, &r.account_id, &r.contact_id)
            .await?;
        if !store::unlink(&tx, account, contact).await? {
            return Err(ApiError::not_found("link"));
        }
        self.emit(
            &tx,
            caller,
            "contact.unlinked",
            contact,
            Some(json!({"accountId": account, "contactId": contact})),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_account_contacts(
        &self,
        caller: &Caller,
        r: pb::ListAccountContactsRequest,
    ) -> ApiResult<pb::ListAccountContactsResponse> {
        let (access, account) = self.read_record(caller, &ACCOUNT, &r.account_id).await?;
        let reach = access.require("contact", "read")?;
        let size = page_size(r.page_size, "page_size")?;
        let query = format!("account_contacts|{}", account.id);
        let after = self
            .inner
            .pages
            .decode(&r.page_token, caller.tenant, &query, "page_token")?
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::account_contacts(&tx, account.id, &reach, after, size + 1).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = self
                    .inner
                    .pages
                    .encode(caller.tenant, &query, &last.id.to_string());
            }
        }
        Ok(pb::ListAccountContactsResponse {
            contacts: rows.iter().map(|r| contact_pb(&access, r)).collect(),
            next_page_token: next,
        })
    }

    // ---- custom fields ------------------------------------------------------------------

    pub async fn list_custom_fields(
        &self,
        caller: &Caller,
        object_type: &str,
    ) -> ApiResult<Vec<pb::CustomField>> {
        let access = self.access(caller).await?;
        if !object_type.is_empty() && !custom::OBJECT_TYPES.contains(&object_type) {
            return Err(ApiError::invalid(
                "object_type",
                "must be account, contact or opportunity",
            ));
        }
        // Whoever may read records of a type sees its definitions (they decide what writes
        // of those records accept), so services that validate values on a caller's behalf
        // can read them with the caller's token.
        let reads_type = !object_type.is_empty() && access.scope(object_type, "read").is_some();
        if !reads_type {
            access.require("custom_field", "read")?;
        }
        let tx = self.tx(caller.tenant).await?;
        let rows =
            store::custom_fields(&tx, (!object_type.is_empty()).then_some(object_type)).await?;
        tx.commit().await?;
        Ok(rows.iter().map(custom_field_pb).collect())
    }

    fn check_definition(
        v: &mut Violations,
        label: &str,
        field_type: Option<FieldType>,
        options: &[String],
    ) {
        v.text("label", label);
        let n = label.trim().chars().count();
        v.check(n == 0 || n > 100, "label", "must be 1 to 100 characters");
        let Some(t) = field_type else { return };
        if t.has_options() {
            v.check(
                options.is_empty() || options.len() > custom::MAX_OPTIONS,
                "options",
                "must list 1 to 200 options",
            );
            for (i, o) in options.iter().enumerate() {
                let bad = o.trim().is_empty() || o.chars().count() > 100 || o.contains('\0');
                v.check(bad, &format!("options[{i}]"), "must be 1 to 100 characters");
                if options[..i].contains(o) {
                    v.add(format!("options[{i}]"), "is listed twice");
                }
            }
        } else {
            v.check(
                !options.is_empty(),
                "options",
                "only select and multiselect fields take options",
            );
        }
    }

    pub async fn create_custom_field(
        &self,
        caller: &Caller,
        r: pb::CreateCustomFieldRequest,
    ) -> ApiResult<pb::CustomField> {
        let access = self.access(caller).await?;
        access.require("custom_field", "create")?;
        let mut v = Violations::new();
        v.check(
            !custom::OBJECT_TYPES.contains(&r.object_type.as_str()),
            "object_type",
            "must be account, contact or opportunity",
        );
        v.check(
            !custom::valid_key(&r.key),
            "key",
            "must be a lowercase letter followed by up to 63 lowercase letters, digits or underscores",
        );
        let t = FieldType::from_pb(r.r#type);
        v.check(
            t.is_none(),
            "type",
            "must be text, number, date, boolean, select or multiselect",
        );
        Self::check_definition(&mut v, &r.label, t, &r.options);
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        v.finish()?;
        let t = t.ok_or_else(|| ApiError::invalid("type", "is required"))?;
        let fp = fingerprint(&pb::CreateCustomFieldRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let tx = self.tx(caller.tenant).await?;
        if !r.request_id.is_empty()
            && let Some(id) =
                idempotency::find(&tx, store::SCHEMA, "custom_field", &r.request_id, &fp).await?
        {
            let row = store::custom_field(&tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("custom field"))?;
            tx.commit().await?;
            return Ok(custom_field_pb(&row));
        }
        let existing = store::custom_fields(&tx, Some(&r.object_type)).await?;
        if existing.iter().any(|d| d.key == r.key) {
            return Err(ApiError::conflict(format!(
                "a {} custom field with key {:?} exists",
                r.object_type, r.key
            ))
            .with_fields(vec![FieldViolation {
                field: "key".into(),
                message: "is taken".into(),
            }]));
        }
        if existing.len() >= custom::MAX_DEFINITIONS {
            return Err(ApiError::new(
                ErrorCode::RuleViolation,
                format!(
                    "at most {} custom fields per object type",
                    custom::MAX_DEFINITIONS
                ),
            ));
        }
        let id = Uuid::now_v7();
        store::insert_custom_field(
            &tx,
            id,
            &r.object_type,
            &r.key,
            r.label.trim(),
            t,
            &r.options,
            r.required,
            caller.subject,
        )
        .await
        .map_err(|e| {
            if e.to_string().contains("custom_fields_key") {
                ApiError::conflict(format!("a custom field with key {:?} exists", r.key))
            } else {
                e.into()
            }
        })?;
        let row = store::custom_field(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("custom field"))?;
        self.emit(
            &tx,
            caller,
            "custom_field.created",
            id,
            None,
            Some(row.to_json()),
        )
        .await?;
        if !r.request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, "custom_field", &r.request_id, &fp, id)
                .await?;
        }
        tx.commit().await?;
        Ok(custom_field_pb(&row))
    }

    pub async fn update_custom_field(
        &self,
        caller: &Caller,
        r: pb::UpdateCustomFieldRequest,
    ) -> ApiResult<pb::CustomField> {
        let access = self.access(caller).await?;
        let id = path_id("custom field", &r.id)?;
        access.require("custom_field", "update")?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.check(paths.is_empty(), "update_mask", "names no field to change");
        for p in &paths {
            if !matches!(p.as_str(), "label" | "options" | "required") {
                v.add(
                    "update_mask",
                    format!("{p:?} cannot change; label, options and required can"),
                );
            }
        }
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let row = store::custom_field(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("custom field"))?;
        check_version(&r.etag, row.version)?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let label = if has("label") {
            r.label.clone()
        } else {
            row.label.clone()
        };
        let options = if has("options") {
            r.options.clone()
        } else {
            row.option_list()
        };
        let required = if has("required") {
            r.required
        } else {
            row.required
        };
        let mut v = Violations::new();
        Self::check_definition(&mut v, &label, FieldType::parse(&row.field_type), &options);
        v.finish()?;
        store::update_custom_field(&tx, id, label.trim(), &options, required).await?;
        let after = store::custom_field(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("custom field"))?;
        self.emit(
            &tx,
            caller,
            "custom_field.updated",
            id,
            Some(row.to_json()),
            Some(after.to_json()),
        )
        .await?;
        tx.commit().await?;
        Ok(custom_field_pb(&after))
    }

    pub async fn delete_custom_field(&self, caller: &Caller, id: &str) -> ApiResult<()> {
        let access = self.access(caller).await?;
        let id = path_id("custom field", id)?;
        access.require("custom_field", "delete")?;
        let tx = self.tx(caller.tenant).await?;
        let row = store::custom_field(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("custom field"))?;
        store::delete_custom_field(&tx, &row).await?;
        self.emit(
            &tx,
            caller,
            "custom_field.deleted",
            id,
            Some(row.to_json()),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The ILIKE pattern of a partial-text query: the text anywhere, wildcards taken literally.
pub fn like_pattern(query: &str) -> String {
    let escaped = query
        .trim()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The query of a list page: filter, partial text, scope and keyset, compiled to SQL
/// conditions with bound parameters. `matches` are the ids that match the partial text when
/// they were looked up ([`store::text_matches`]); without them the text is an ILIKE condition.
#[allow(clippy::too_many_arguments)]
pub fn list_query(
    obj: &Object,
    schema: &Schema<'_>,
    reach: &Reach,
    a: ListArgs<'_>,
    tenant: TenantId,
    after: Option<(Option<String>, Uuid)>,
    limit: u64,
    matches: Option<&[Uuid]>,
) -> ApiResult<ListQuery> {
    // Parameters after $1 (the tenant).
    let mut params = vec![sea_orm::Value::from(tenant.uuid())];
    let mut conditions = Vec::new();
    if let Some(e) = filter::parse(a.filter)? {
        conditions.push(filter::compile(&e, schema, &mut params)?);
    }
    let query = a.query.trim();
    if !query.is_empty() {
        match matches {
            Some(ids) => {
                params.push(ids.to_vec().into());
                conditions.push(format!("t.id = ANY(${})", params.len()));
            }
            None => {
                params.push(like_pattern(query).into());
                conditions.push(format!("t.search ILIKE ${}", params.len()));
            }
        }
    }
    if let Some(c) = store::reach_sql(reach, &mut params) {
        conditions.push(c);
    }
    Ok(ListQuery {
        conditions,
        params: params[1..].to_vec(),
        sort: sort_of(obj, schema, a.order_by)?,
        after,
        limit,
    })
}

/// The sort of a list: by a column, or by a custom field through its sort rows.
fn sort_of(obj: &Object, schema: &Schema<'_>, order_by: &str) -> ApiResult<ListSort> {
    let mut words = order_by.split_whitespace();
    let name = words.next().unwrap_or("create_time");
    let descending = match words.next() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "order_by",
                format!("direction {other:?} must be asc or desc"),
            ));
        }
    };
    if words.next().is_some() || order_by.contains(',') {
        return Err(ApiError::invalid("order_by", "sorts by one field"));
    }
    if name.starts_with("custom.")
        && let filter::Target::Custom(d) = schema.resolve(name, "order_by")?
    {
        // A custom field sorts by its indexed rows, whose index serves every page; missing
        // values sort first. Keys are validated identifiers and the names constants, safe
        // to inline.
        let ix = store::custom_index(obj);
        return Ok(ListSort {
            expr: "s.v".into(),
            cast: "text",
            id: "s.record_id",
            join: Some(format!(
                "JOIN {table} s ON s.tenant_id = t.tenant_id AND s.record_id = t.id \
                 AND s.object_type = '{object}' AND s.key = '{key}'",
                table = ix.table,
                object = ix.object_type,
                key = d.key
            )),
            descending,
        });
    }
    let sort = obj.sorts.iter().find(|s| s.name == name).ok_or_else(|| {
        ApiError::invalid(
            "order_by",
            format!(
                "one of {}, custom.<key>",
                obj.sorts
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    if (schema.hidden)(sort.rest) {
        return Err(filter::hidden("order_by", sort.name));
    }
    Ok(ListSort {
        expr: sort.expr.to_owned(),
        cast: sort.cast,
        id: "t.id",
        join: None,
        descending,
    })
}

/// The before and after of the fields an update changed (REST names).
fn diff(obj: &Object, before: &Record, after: &Record) -> (Json, Json) {
    let (mut b, mut a) = (Map::new(), Map::new());
    for c in obj.columns.iter().chain(obj.derived) {
        if before.get(c.column) != after.get(c.column) {
            b.insert(
                c.rest.into(),
                before.get(c.column).map_or(Json::Null, Json::from),
            );
            a.insert(
                c.rest.into(),
                after.get(c.column).map_or(Json::Null, Json::from),
            );
        }
    }
    let keys: std::collections::BTreeSet<&String> =
        before.custom.keys().chain(after.custom.keys()).collect();
    for k in keys {
        let (x, y) = (before.custom.get(k), after.custom.get(k));
        if x != y {
            b.insert(format!("custom.{k}"), x.cloned().unwrap_or(Json::Null));
            a.insert(format!("custom.{k}"), y.cloned().unwrap_or(Json::Null));
        }
    }
    a.insert("version".into(), after.version.into());
    b.insert("version".into(), before.version.into());
    (Json::Object(b), Json::Object(a))
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    crm_kit::auth::caller(req)
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AccountsService for Accounts {
    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> R<pb::ListAccountsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Accounts::list_accounts(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_account(&self, req: Request<pb::GetAccountRequest>) -> R<pb::GetAccountResponse> {
        let c = caller(&req)?;
        let account = Accounts::get_account(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account),
        }))
    }

    async fn batch_get_accounts(
        &self,
        req: Request<pb::BatchGetAccountsRequest>,
    ) -> R<pb::BatchGetAccountsResponse> {
        let c = caller(&req)?;
        let accounts = Accounts::batch_get_accounts(self, &c, &req.get_ref().ids).await?;
        Ok(Response::new(pb::BatchGetAccountsResponse { accounts }))
    }

    async fn create_account(
        &self,
        req: Request<pb::CreateAccountRequest>,
    ) -> R<pb::CreateAccountResponse> {
        let c = caller(&req)?;
        let account = Accounts::create_account(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(account),
        }))
    }

    async fn update_account(
        &self,
        req: Request<pb::UpdateAccountRequest>,
    ) -> R<pb::UpdateAccountResponse> {
        let c = caller(&req)?;
        let account = Accounts::update_account(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateAccountResponse {
            account: Some(account),
        }))
    }

    async fn delete_account(
        &self,
        req: Request<pb::DeleteAccountRequest>,
    ) -> R<pb::DeleteAccountResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        self.delete_record(&c, &ACCOUNT, &r.id, &r.etag).await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn restore_account(
        &self,
        req: Request<pb::RestoreAccountRequest>,
    ) -> R<pb::RestoreAccountResponse> {
        let c = caller(&req)?;
        let (access, r) = self.restore_record(&c, &ACCOUNT, &req.get_ref().id).await?;
        Ok(Response::new(pb::RestoreAccountResponse {
            account: Some(account_pb(&access, &r)),
        }))
    }

    async fn list_contacts(
        &self,
        req: Request<pb::ListContactsRequest>,
    ) -> R<pb::ListContactsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Accounts::list_contacts(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_contact(&self, req: Request<pb::GetContactRequest>) -> R<pb::GetContactResponse> {
        let c = caller(&req)?;
        let contact = Accounts::get_contact(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetContactResponse {
            contact: Some(contact),
        }))
    }

    async fn create_contact(
        &self,
        req: Request<pb::CreateContactRequest>,
    ) -> R<pb::CreateContactResponse> {
        let c = caller(&req)?;
        let contact = Accounts::create_contact(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateContactResponse {
            contact: Some(contact),
        }))
    }

    async fn update_contact(
        &self,
        req: Request<pb::UpdateContactRequest>,
    ) -> R<pb::UpdateContactResponse> {
        let c = caller(&req)?;
        let contact = Accounts::update_contact(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateContactResponse {
            contact: Some(contact),
        }))
    }

    async fn delete_contact(
        &self,
        req: Request<pb::DeleteContactRequest>,
    ) -> R<pb::DeleteContactResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        self.delete_record(&c, &CONTACT, &r.id, &r.etag).await?;
        Ok(Response::new(pb::DeleteContactResponse {}))
    }

    async fn restore_contact(
        &self,
        req: Request<pb::RestoreContactRequest>,
    ) -> R<pb::RestoreContactResponse> {
        let c = caller(&req)?;
        let (access, r) = self.restore_record(&c, &CONTACT, &req.get_ref().id).await?;
        Ok(Response::new(pb::RestoreContactResponse {
            contact: Some(contact_pb(&access, &r)),
        }))
    }

    async fn bulk_update_contacts(
        &self,
        req: Request<pb::BulkUpdateContactsRequest>,
    ) -> R<pb::BulkUpdateContactsResponse> {
        let c = caller(&req)?;
        let results = Accounts::bulk_update_contacts(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::BulkUpdateContactsResponse { results }))
    }

    async fn list_account_contacts(
        &self,
        req: Request<pb::ListAccountContactsRequest>,
    ) -> R<pb::ListAccountContactsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Accounts::list_account_contacts(self, &c, req.into_inner()).await?,
        ))
    }

    async fn link_contact(
        &self,
        req: Request<pb::LinkContactRequest>,
    ) -> R<pb::LinkContactResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Accounts::link_contact(self, &c, req.into_inner()).await?,
        ))
    }

    async fn unlink_contact(
        &self,
        req: Request<pb::UnlinkContactRequest>,
    ) -> R<pb::UnlinkContactResponse> {
        let c = caller(&req)?;
        Accounts::unlink_contact(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UnlinkContactResponse {}))
    }

    async fn list_custom_fields(
        &self,
        req: Request<pb::ListCustomFieldsRequest>,
    ) -> R<pb::ListCustomFieldsResponse> {
        let c = caller(&req)?;
        let custom_fields =
            Accounts::list_custom_fields(self, &c, &req.get_ref().object_type).await?;
        Ok(Response::new(pb::ListCustomFieldsResponse {
            custom_fields,
        }))
    }

    async fn create_custom_field(
        &self,
        req: Request<pb::CreateCustomFieldRequest>,
    ) -> R<pb::CreateCustomFieldResponse> {
        let c = caller(&req)?;
        let f = Accounts::create_custom_field(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateCustomFieldResponse {
            custom_field: Some(f),
        }))
    }

    async fn update_custom_field(
        &self,
        req: Request<pb::UpdateCustomFieldRequest>,
    ) -> R<pb::UpdateCustomFieldResponse> {
        let c = caller(&req)?;
        let f = Accounts::update_custom_field(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateCustomFieldResponse {
            custom_field: Some(f),
        }))
    }

    async fn delete_custom_field(
        &self,
        req: Request<pb::DeleteCustomFieldRequest>,
    ) -> R<pb::DeleteCustomFieldResponse> {
        let c = caller(&req)?;
        Accounts::delete_custom_field(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::DeleteCustomFieldResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_get_an_e164_form_when_they_parse() {
        assert_eq!(e164("+44 20 7946 0958").as_deref(), Some("+442079460958"));
        assert_eq!(e164("+1 (415) 555-2671").as_deref(), Some("+14155552671"));
        assert_eq!(e164("0171 1234567"), None, "no country, no E.164");
        assert_eq!(e164("+1 23"), None);
    }
}
