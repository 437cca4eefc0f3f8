//! SQL of the accounts schema. Accounts and contacts are both "records": a row with system
//! columns (tenant, id, version, times, authors, soft-delete mark), data columns described
//! by an [`Object`], and a JSONB `custom` object. Every function takes a [`TenantTx`] and
//! filters by its tenant on top of row-level security.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crm_kit::TenantTx;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, QueryResult, Statement, Value};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::{
    access::Reach,
    custom::{Definition, FieldType},
    filter::{CustomIndex, Field, Kind},
};

/// The schema this service owns.
pub const SCHEMA: &str = "accounts";

pub(crate) fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// A data column of a record type.
#[derive(Debug)]
pub struct Column {
    /// The REST (camelCase) name, used by field rules and events.
    pub rest: &'static str,
    /// The proto / filter name.
    pub grpc: &'static str,
    pub column: &'static str,
    pub kind: Kind,
}

/// A sort key: its order_by name, the SQL expression, and the type its cursor value casts to.
#[derive(Clone, Copy, Debug)]
pub struct Sort {
    pub name: &'static str,
    pub rest: &'static str,
    pub expr: &'static str,
    pub cast: &'static str,
}

/// A record type: its table and columns.
#[derive(Debug)]
pub struct Object {
    /// The object type of permissions and events: "account" or "contact".
    pub name: &'static str,
    pub table: &'static str,
    pub columns: &'static [Column],
    /// Derived columns: read, never written by callers.
    pub derived: &'static [Column],
    pub filters: &'static [Field],
    pub sorts: &'static [Sort],
}

const fn col(rest: &'static str, grpc: &'static str, kind: Kind) -> Column {
    Column {
        rest,
        grpc,
        column: grpc,
        kind,
    }
}

const fn field(name: &'static str, rest: &'static str, column: &'static str, kind: Kind) -> Field {
    Field {
        name,
        rest,
        column,
        kind,
    }
}

const TIME_SORTS: [Sort; 2] = [
    Sort {
        name: "create_time",
        rest: "createdAt",
        expr: "t.created_at",
        cast: "timestamptz",
    },
    Sort {
        name: "update_time",
        rest: "updatedAt",
        expr: "t.updated_at",
        cast: "timestamptz",
    },
];

/// Accounts.
pub static ACCOUNT: Object = Object {
    name: "account",
    table: "accounts.accounts",
    columns: &[
        col("name", "name", Kind::Text),
        col("website", "website", Kind::Text),
        col("industry", "industry", Kind::Text),
        col("ownerUserId", "owner_user_id", Kind::Uuid),
    ],
    derived: &[],
    filters: &[
        field("id", "id", "id", Kind::Uuid),
        field("name", "name", "name", Kind::Text),
        field("website", "website", "website", Kind::Text),
        field("industry", "industry", "industry", Kind::Text),
        field("owner_user_id", "ownerUserId", "owner_user_id", Kind::Uuid),
        field("create_time", "createdAt", "created_at", Kind::Time),
        field("update_time", "updatedAt", "updated_at", Kind::Time),
    ],
    sorts: &[
        TIME_SORTS[0],
        TIME_SORTS[1],
        Sort {
            name: "name",
            rest: "name",
            expr: "t.name",
            cast: "text",
        },
    ],
};

/// Contacts.
pub static CONTACT: Object = Object {
    name: "contact",
    table: "accounts.contacts",
    columns: &[
        col("firstName", "first_name", Kind::Text),
        col("lastName", "last_name", Kind::Text),
        col("email", "email", Kind::Text),
        col("phone", "phone", Kind::Text),
        col("title", "title", Kind::Text),
        col("accountId", "account_id", Kind::Uuid),
        col("ownerUserId", "owner_user_id", Kind::Uuid),
    ],
    derived: &[col("phoneE164", "phone_e164", Kind::Text)],
    filters: &[
        field("id", "id", "id", Kind::Uuid),
        field("first_name", "firstName", "first_name", Kind::Text),
        field("last_name", "lastName", "last_name", Kind::Text),
        field("email", "email", "email", Kind::Text),
        field("phone", "phone", "phone", Kind::Text),
        field("title", "title", "title", Kind::Text),
        field("account_id", "accountId", "account_id", Kind::Uuid),
        field("owner_user_id", "ownerUserId", "owner_user_id", Kind::Uuid),
        field("create_time", "createdAt", "created_at", Kind::Time),
        field("update_time", "updatedAt", "updated_at", Kind::Time),
    ],
    sorts: &[
        TIME_SORTS[0],
        TIME_SORTS[1],
        Sort {
            name: "last_name",
            rest: "lastName",
            expr: "t.last_name",
            cast: "text",
        },
    ],
};

impl Object {
    fn all_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().chain(self.derived)
    }

    /// A column by its proto name.
    pub fn column(&self, grpc: &str) -> Option<&Column> {
        self.all_columns().find(|c| c.grpc == grpc)
    }

    fn select(&self) -> String {
        self.select_with("")
    }

    /// The select over alias `t` with `extra` columns (", expr AS name", ...) added.
    fn select_with(&self, extra: &str) -> String {
        let cols: Vec<String> = self
            .all_columns()
            .map(|c| format!("t.{0}::text AS {0}", c.column))
            .collect();
        format!(
            "SELECT t.id, {}, t.custom, t.version, t.created_at, t.updated_at, t.created_by, t.deleted_at{extra} \
             FROM {} t",
            cols.join(", "),
            self.table
        )
    }
}

/// One account or contact.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: Uuid,
    /// Data columns by column name; uuids as text.
    pub values: HashMap<&'static str, Option<String>>,
    pub custom: Map<String, Json>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The sort key of a listed row, as text, for its cursor.
    pub sort_key: Option<String>,
    /// The link role of a contact listed under an account.
    pub link_role: Option<String>,
}

impl Record {
    /// A data value.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.values.get(column).and_then(|v| v.as_deref())
    }

    /// The owner.
    pub fn owner(&self) -> Option<Uuid> {
        self.get("owner_user_id")
            .and_then(|s| Uuid::parse_str(s).ok())
    }

    fn from_row(obj: &Object, r: &QueryResult) -> Result<Self, DbErr> {
        let mut values = HashMap::new();
        for c in obj.all_columns() {
            values.insert(c.column, r.try_get::<Option<String>>("", c.column)?);
        }
        let custom = match r.try_get::<Json>("", "custom")? {
            Json::Object(m) => m,
            _ => Map::new(),
        };
        Ok(Self {
            id: r.try_get("", "id")?,
            values,
            custom,
            version: r.try_get("", "version")?,
            created_at: r.try_get("", "created_at")?,
            updated_at: r.try_get("", "updated_at")?,
            created_by: r.try_get("", "created_by")?,
            deleted_at: r.try_get("", "deleted_at")?,
            sort_key: r.try_get::<Option<String>>("", "sort_key").ok().flatten(),
            link_role: r.try_get::<Option<String>>("", "link_role").ok().flatten(),
        })
    }

    /// The record as events and audit views show it (REST names).
    pub fn to_json(&self, obj: &Object) -> Json {
        let mut m = Map::new();
        m.insert("id".into(), Json::String(self.id.to_string()));
        for c in obj.all_columns() {
            m.insert(
                c.rest.into(),
                self.get(c.column)
                    .map(|s| Json::String(s.to_owned()))
                    .unwrap_or(Json::Null),
            );
        }
        m.insert("custom".into(), Json::Object(self.custom.clone()));
        m.insert("version".into(), self.version.into());
        Json::Object(m)
    }
}

fn t(tx: &TenantTx) -> Value {
    tx.tenant().uuid().into()
}

/// The SQL condition of a reach over alias `t`, appending its parameter.
pub fn reach_sql(reach: &Reach, params: &mut Vec<Value>) -> Option<String> {
    match reach {
        Reach::All => None,
        Reach::Owners(ids) => {
            params.push(ids.clone().into());
            Some(format!("t.owner_user_id = ANY(${})", params.len()))
        }
    }
}

/// One record by id; deleted ones only when asked; `lock` takes a row lock for an update.
pub async fn fetch(
    tx: &TenantTx,
    obj: &Object,
    id: Uuid,
    deleted: bool,
    lock: bool,
) -> Result<Option<Record>, DbErr> {
    let sql = format!(
        "{} WHERE t.tenant_id = $1 AND t.id = $2 AND (t.deleted_at IS NULL) <> $3{}",
        obj.select(),
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = tx
        .conn()
        .query_one_raw(stmt(&sql, [t(tx), id.into(), deleted.into()]))
        .await?;
    row.map(|r| Record::from_row(obj, &r)).transpose()
}

/// Several live records by id.
pub async fn fetch_many(
    tx: &TenantTx,
    obj: &Object,
    ids: &[Uuid],
    reach: &Reach,
) -> Result<Vec<Record>, DbErr> {
    let mut params = vec![t(tx), ids.to_vec().into()];
    let mut sql = format!(
        "{} WHERE t.tenant_id = $1 AND t.id = ANY($2) AND t.deleted_at IS NULL",
        obj.select()
    );
    if let Some(c) = reach_sql(reach, &mut params) {
        sql.push_str(&format!(" AND {c}"));
    }
    let rows = tx.conn().query_all_raw(stmt(&sql, params)).await?;
    rows.iter().map(|r| Record::from_row(obj, r)).collect()
}

/// Partial-text matches are looked up by id up to this many; a term matching more rows is
/// common enough that the ordered scan of a list finds its page after a few rows.
pub const TEXT_MATCH_CAP: i32 = 2_000;

/// The ids of the tenant's live records whose search text matches `pattern` (an ILIKE
/// pattern), through the trigram index; `None` when more than [`TEXT_MATCH_CAP`] match or
/// PostgreSQL expects that many.
pub async fn text_matches(
    tx: &TenantTx,
    obj: &Object,
    pattern: &str,
) -> Result<Option<Vec<Uuid>>, DbErr> {
    let table = obj.table.rsplit('.').next().unwrap_or(obj.table);
    let row = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT accounts.text_matches($1, $2, $3) AS ids",
            [table.into(), pattern.into(), TEXT_MATCH_CAP.into()],
        ))
        .await?;
    match row {
        Some(r) => r.try_get::<Option<Vec<Uuid>>>("", "ids"),
        None => Ok(None),
    }
}

/// The rows that index every record's custom values, one per record and defined field
/// (migration `accounts.m0003_custom_sort`, kept by triggers): sorts by a custom field read
/// them in order, and selective comparisons in filters are narrowed through them.
pub fn custom_index(obj: &Object) -> CustomIndex<'static> {
    CustomIndex {
        table: "accounts.custom_sort",
        object_type: obj.name,
        value_fn: "accounts.custom_sort_value",
    }
}

/// The order of a list page.
pub struct ListSort {
    /// The sort key's SQL expression and the type its cursor value casts to.
    pub expr: String,
    pub cast: &'static str,
    /// The record id as the sort's index holds it (the keyset's tie-break).
    pub id: &'static str,
    /// The join that brings in the sort key, when it is not a column of `t`.
    pub join: Option<String>,
    pub descending: bool,
}

/// A keyset page of live records.
pub struct ListQuery {
    /// Conditions over alias `t`, joined by AND; their parameters follow `$1` (the tenant).
    pub conditions: Vec<String>,
    pub params: Vec<Value>,
    pub sort: ListSort,
    /// Resume after this (sort key as text, id).
    pub after: Option<(Option<String>, Uuid)>,
    pub limit: u64,
}

/// The statement of a page (also run directly by the benchmarks as their baseline).
pub fn list_statement(obj: &Object, tenant: Uuid, q: &ListQuery) -> Statement {
    let mut params = vec![Value::from(tenant)];
    params.extend(q.params.iter().cloned());
    let mut conds = vec![
        "t.tenant_id = $1".to_owned(),
        "t.deleted_at IS NULL".to_owned(),
    ];
    conds.extend(q.conditions.iter().cloned());
    let sort = &q.sort;
    let (cmp, dir) = if sort.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((key, id)) = &q.after {
        params.push(key.clone().into());
        let k = params.len();
        params.push((*id).into());
        let i = params.len();
        conds.push(format!(
            "({expr}, {id}) {cmp} (${k}::{cast}, ${i})",
            expr = sort.expr,
            id = sort.id,
            cast = sort.cast
        ));
    }
    params.push((q.limit as i64).into());
    let sql = format!(
        "{select} {join} WHERE {conds} ORDER BY {expr} {dir}, {id} {dir} LIMIT ${n}",
        select = obj.select_with(&format!(", ({})::text AS sort_key", sort.expr)),
        join = sort.join.as_deref().unwrap_or_default(),
        expr = sort.expr,
        id = sort.id,
        conds = conds.join(" AND "),
        n = params.len(),
    );
    stmt(&sql, params)
}

/// A page of live records.
pub async fn list(tx: &TenantTx, obj: &Object, q: &ListQuery) -> Result<Vec<Record>, DbErr> {
    let rows = tx
        .conn()
        .query_all_raw(list_statement(obj, tx.tenant().uuid(), q))
        .await?;
    rows.iter().map(|r| Record::from_row(obj, r)).collect()
}

/// Inserts a record; its values name data and derived columns.
pub async fn insert(
    tx: &TenantTx,
    obj: &Object,
    id: Uuid,
    values: &HashMap<&'static str, Option<String>>,
    custom: &Map<String, Json>,
    actor: Uuid,
) -> Result<Record, DbErr> {
    let mut cols = vec!["tenant_id", "id", "custom", "created_by", "updated_by"];
    let mut params: Vec<Value> = vec![
        t(tx),
        id.into(),
        Json::Object(custom.clone()).into(),
        actor.into(),
        actor.into(),
    ];
    let mut placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    for c in obj.all_columns() {
        if let Some(v) = values.get(c.column) {
            cols.push(c.column);
            params.push(v.clone().into());
            placeholders.push(match c.kind {
                Kind::Uuid => format!("${}::uuid", params.len()),
                _ => format!("${}", params.len()),
            });
        }
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        obj.table,
        cols.join(", "),
        placeholders.join(", ")
    );
    tx.conn().execute_raw(stmt(&sql, params)).await?;
    fetch(tx, obj, id, false, false)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("inserted record".into()))
}

/// Writes changed values (and `custom` when given), bumping the version.
pub async fn update(
    tx: &TenantTx,
    obj: &Object,
    id: Uuid,
    values: &[(&'static str, Option<String>)],
    custom: Option<&Map<String, Json>>,
    actor: Uuid,
) -> Result<Record, DbErr> {
    let mut params: Vec<Value> = vec![t(tx), id.into(), actor.into()];
    let mut sets = vec![
        "version = t.version + 1".to_owned(),
        "updated_at = clock_timestamp()".to_owned(),
        "updated_by = $3".to_owned(),
    ];
    for (column, v) in values {
        let Some(c) = obj.column(column) else {
            continue;
        };
        params.push(v.clone().into());
        sets.push(match c.kind {
            Kind::Uuid => format!("{} = ${}::uuid", c.column, params.len()),
            _ => format!("{} = ${}", c.column, params.len()),
        });
    }
    if let Some(c) = custom {
        params.push(Json::Object(c.clone()).into());
        sets.push(format!("custom = ${}", params.len()));
    }
    let sql = format!(
        "UPDATE {} t SET {} WHERE t.tenant_id = $1 AND t.id = $2",
        obj.table,
        sets.join(", ")
    );
    tx.conn().execute_raw(stmt(&sql, params)).await?;
    fetch(tx, obj, id, false, false)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("updated record".into()))
}

/// Sets or clears the soft-delete mark, bumping the version.
pub async fn set_deleted(
    tx: &TenantTx,
    obj: &Object,
    id: Uuid,
    deleted: bool,
    actor: Uuid,
) -> Result<(), DbErr> {
    let sql = format!(
        "UPDATE {} t SET deleted_at = CASE WHEN $3 THEN clock_timestamp() END, \
         deleted_by = CASE WHEN $3 THEN $4 END, version = t.version + 1, \
         updated_at = clock_timestamp(), updated_by = $4 \
         WHERE t.tenant_id = $1 AND t.id = $2",
        obj.table
    );
    tx.conn()
        .execute_raw(stmt(&sql, [t(tx), id.into(), deleted.into(), actor.into()]))
        .await?;
    Ok(())
}

// ---- links -------------------------------------------------------------------------------

/// Links a contact to an account, or changes the link's role; returns the previous role
/// (`Some(None)` for a link without one) when a link existed.
pub async fn link(
    tx: &TenantTx,
    account: Uuid,
    contact: Uuid,
    role: Option<&str>,
    actor: Uuid,
) -> Result<Option<Option<String>>, DbErr> {
    let before = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT role FROM accounts.account_contacts \
             WHERE tenant_id = $1 AND account_id = $2 AND contact_id = $3 FOR UPDATE",
            [t(tx), account.into(), contact.into()],
        ))
        .await?
        .map(|r| r.try_get::<Option<String>>("", "role"))
        .transpose()?;
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO accounts.account_contacts (tenant_id, account_id, contact_id, role, created_by) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, account_id, contact_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()",
            [
                t(tx),
                account.into(),
                contact.into(),
                role.map(str::to_owned).into(),
                actor.into(),
            ],
        ))
        .await?;
    Ok(before)
}

/// Removes a link; false when there was none.
pub async fn unlink(tx: &TenantTx, account: Uuid, contact: Uuid) -> Result<bool, DbErr> {
    let r = tx
        .conn()
        .execute_raw(stmt(
            "DELETE FROM accounts.account_contacts WHERE tenant_id = $1 AND account_id = $2 AND contact_id = $3",
            [t(tx), account.into(), contact.into()],
        ))
        .await?;
    Ok(r.rows_affected() > 0)
}

/// A page of the live contacts of an account (linked, or with it as primary account), by id.
pub async fn account_contacts(
    tx: &TenantTx,
    account: Uuid,
    reach: &Reach,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Record>, DbErr> {
    let mut params = vec![t(tx), account.into(), after.into(), (limit as i64).into()];
    let mut sql = format!(
        "{} LEFT JOIN accounts.account_contacts l \
           ON l.tenant_id = t.tenant_id AND l.contact_id = t.id AND l.account_id = $2 \
         WHERE t.tenant_id = $1 AND t.deleted_at IS NULL \
           AND (t.account_id = $2 OR l.contact_id IS NOT NULL) \
           AND ($3::uuid IS NULL OR t.id > $3)",
        CONTACT.select_with(", l.role AS link_role")
    );
    if let Some(c) = reach_sql(reach, &mut params) {
        sql.push_str(&format!(" AND {c}"));
    }
    sql.push_str(" ORDER BY t.id LIMIT $4");
    let rows = tx.conn().query_all_raw(stmt(&sql, params)).await?;
    rows.iter().map(|r| Record::from_row(&CONTACT, r)).collect()
}

// ---- custom field definitions -------------------------------------------------------------

/// A stored custom field definition.
#[derive(Clone, Debug, FromQueryResult)]
pub struct CustomFieldRow {
    pub id: Uuid,
    pub object_type: String,
    pub key: String,
    pub label: String,
    pub field_type: String,
    pub options: Json,
    pub required: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CustomFieldRow {
    /// The options as a list.
    pub fn option_list(&self) -> Vec<String> {
        serde_json::from_value(self.options.clone()).unwrap_or_default()
    }

    /// The definition values are checked against.
    pub fn definition(&self) -> Option<Definition> {
        Some(Definition {
            key: self.key.clone(),
            field_type: FieldType::parse(&self.field_type)?,
            options: self.option_list(),
            required: self.required,
        })
    }

    /// What events show.
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "id": self.id, "objectType": self.object_type, "key": self.key, "label": self.label,
            "type": self.field_type, "options": self.options, "required": self.required,
            "version": self.version,
        })
    }
}

const CUSTOM_SELECT: &str = "SELECT id, object_type, key, label, type AS field_type, options, required, version, created_at, updated_at \
    FROM accounts.custom_fields";

/// Definitions of a tenant, of one object type or all.
pub async fn custom_fields(
    tx: &TenantTx,
    object_type: Option<&str>,
) -> Result<Vec<CustomFieldRow>, DbErr> {
    CustomFieldRow::find_by_statement(stmt(
        &format!(
            "{CUSTOM_SELECT} WHERE tenant_id = $1 AND ($2::text IS NULL OR object_type = $2) ORDER BY object_type, key"
        ),
        [t(tx), object_type.map(str::to_owned).into()],
    ))
    .all(tx.conn())
    .await
}

/// The definitions values of an object type are checked against.
pub async fn definitions(tx: &TenantTx, object_type: &str) -> Result<Vec<Definition>, DbErr> {
    Ok(custom_fields(tx, Some(object_type))
        .await?
        .iter()
        .filter_map(CustomFieldRow::definition)
        .collect())
}

/// One definition.
pub async fn custom_field(tx: &TenantTx, id: Uuid) -> Result<Option<CustomFieldRow>, DbErr> {
    CustomFieldRow::find_by_statement(stmt(
        &format!("{CUSTOM_SELECT} WHERE tenant_id = $1 AND id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

/// Inserts a definition.
#[allow(clippy::too_many_arguments)]
pub async fn insert_custom_field(
    tx: &TenantTx,
    id: Uuid,
    object_type: &str,
    key: &str,
    label: &str,
    field_type: FieldType,
    options: &[String],
    required: bool,
    actor: Uuid,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO accounts.custom_fields (tenant_id, id, object_type, key, label, type, options, required, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                t(tx),
                id.into(),
                object_type.into(),
                key.into(),
                label.into(),
                field_type.as_str().into(),
                serde_json::json!(options).into(),
                required.into(),
                actor.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// Changes a definition's label, options and required flag.
pub async fn update_custom_field(
    tx: &TenantTx,
    id: Uuid,
    label: &str,
    options: &[String],
    required: bool,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "UPDATE accounts.custom_fields SET label = $3, options = $4, required = $5, \
             version = version + 1, updated_at = now() WHERE tenant_id = $1 AND id = $2",
            [
                t(tx),
                id.into(),
                label.into(),
                serde_json::json!(options).into(),
                required.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// Deletes a definition and, for the records kept here, the values stored under its key.
/// Other object types' values live in their own service, which removes them when it sees
/// `custom_field.deleted`.
pub async fn delete_custom_field(tx: &TenantTx, row: &CustomFieldRow) -> Result<(), DbErr> {
    let table = match row.object_type.as_str() {
        "account" => Some(ACCOUNT.table),
        "contact" => Some(CONTACT.table),
        _ => None,
    };
    if let Some(table) = table {
        // The lock the definition's trigger takes, taken first: the update below shares it
        // (through the records' trigger), and two deletes that each held it shared while
        // waiting for it alone would deadlock.
        tx.conn()
            .execute_raw(stmt(
                "SELECT pg_advisory_xact_lock(accounts.custom_sort_lock($1, $2))",
                [t(tx), row.object_type.clone().into()],
            ))
            .await?;
        tx.conn()
            .execute_raw(stmt(
                &format!(
                    "UPDATE {table} SET custom = custom - $2 WHERE tenant_id = $1 AND (custom -> $2) IS NOT NULL"
                ),
                [t(tx), row.key.clone().into()],
            ))
            .await?;
    }
    tx.conn()
        .execute_raw(stmt(
            "DELETE FROM accounts.custom_fields WHERE tenant_id = $1 AND id = $2",
            [t(tx), row.id.into()],
        ))
        .await?;
    Ok(())
}

/// Whether a live account exists (for a contact's primary account).
pub async fn account_exists(tx: &TenantTx, id: Uuid) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM accounts.accounts WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            [t(tx), id.into()],
        ))
        .await?
        .is_some())
}
