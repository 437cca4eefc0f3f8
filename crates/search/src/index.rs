//! The index in the `search` schema: documents kept at the highest version seen per record
//! (tombstones included, so a late event cannot bring a deleted record back), the candidate
//! query, counts, and the sweep that ends a rebuild.

use crm_kit::{Db, TenantTx, access::Reach};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value as SqlValue};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{kinds::Kind, score::Query};

/// The schema the service owns.
pub const SCHEMA: &str = "search";

/// Candidates read per query before scoring.
const CANDIDATES: u64 = 300;

/// Keys `search.candidates` narrows a query to, before the caller's visible fields decide.
const NARROWED: i32 = 600;

/// Word similarity (pg_trgm) a candidate needs when nothing else matches.
const FUZZY_THRESHOLD: &str = "0.3";

fn stmt(sql: &str, values: Vec<SqlValue>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// What an event or the owning service says about one record.
#[derive(Debug)]
pub struct Observation {
    pub kind: &'static Kind,
    pub id: Uuid,
    pub version: i64,
    /// The record's fields (REST names); all of them when `full`.
    pub record: Map<String, Value>,
    pub full: bool,
    /// Deleted or live; `None` leaves it as it is (an update).
    pub deleted: Option<bool>,
    /// Set by a rebuild: marks the document as seen by it.
    pub reindex_gen: Option<Uuid>,
}

/// What the index stores of one record, besides its keys and version.
#[derive(Debug)]
pub struct Document {
    /// Each searchable field, for display.
    pub fields: Map<String, Value>,
    /// The same, folded for matching.
    pub folded: Map<String, Value>,
    pub owner: Option<Uuid>,
    pub title: String,
    /// Every folded field, for the trigram and text search indexes.
    pub trgm_text: String,
}

impl Document {
    /// The document of a record (REST field names).
    pub fn of(kind: &Kind, record: &Map<String, Value>) -> Self {
        let fields = kind.fields_of(record);
        let folded = Kind::folded(&fields);
        let trgm_text = folded
            .values()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let title = fields
            .get(kind.title)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            owner: kind.owner_of(record),
            fields,
            folded,
            title,
            trgm_text,
        }
    }
}

/// Applies an observation inside `tx`; older versions only fill fields not known yet.
pub async fn apply(tx: &TenantTx, obs: Observation) -> Result<(), DbErr> {
    let tenant = tx.tenant().uuid();
    let key = || -> Vec<SqlValue> { vec![tenant.into(), obs.kind.name.into(), obs.id.into()] };
    // A placeholder row makes the lock below serialise concurrent first events of a record;
    // it never outlives this transaction at version 0.
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO search.documents (tenant_id, entity_type, entity_id, version) \
             VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
            key(),
        ))
        .await?;
    let row = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT version, record, deleted FROM search.documents \
             WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3 FOR UPDATE",
            key(),
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("search document".into()))?;
    let version: i64 = row.try_get("", "version")?;
    let current: Value = row.try_get("", "record")?;
    let mut deleted: bool = row.try_get("", "deleted")?;
    let mut record = current.as_object().cloned().unwrap_or_default();
    let newer = obs.version > version || (obs.reindex_gen.is_some() && obs.version >= version);
    let new_version = if newer {
        for (k, v) in obs.record {
            record.insert(k, v);
        }
        if let Some(d) = obs.deleted {
            deleted = d;
        }
        obs.version
    } else if obs.full {
        for (k, v) in obs.record {
            record.entry(k).or_insert(v);
        }
        version
    } else {
        return Ok(());
    };
    let doc = Document::of(obs.kind, &record);
    let mut values = key();
    values.extend([
        new_version.into(),
        doc.owner.into(),
        Value::Object(record).into(),
        Value::Object(doc.fields).into(),
        doc.title.into(),
        Value::Object(doc.folded).into(),
        doc.trgm_text.into(),
        deleted.into(),
        obs.reindex_gen.into(),
    ]);
    tx.conn()
        .execute_raw(stmt(
            "UPDATE search.documents SET version = $4, owner_user_id = $5, record = $6, \
             fields = $7, title = $8, folded = $9, trgm_text = $10, tsv = to_tsvector('simple', $10), \
             deleted = $11, deleted_at = CASE WHEN $11 THEN coalesce(deleted_at, clock_timestamp()) END, \
             reindex_gen = coalesce($12, reindex_gen), updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3",
            values,
        ))
        .await?;
    Ok(())
}

/// What one record type contributes to a query for one caller.
#[derive(Debug)]
pub struct Scope {
    pub kind: &'static Kind,
    /// The records the caller may read.
    pub reach: Reach,
    /// The fields the caller may see (and so search).
    pub visible: Vec<&'static str>,
}

/// A document that may match, before scoring.
#[derive(Debug)]
pub struct Candidate {
    pub kind: &'static Kind,
    pub id: Uuid,
    /// For display.
    pub fields: Map<String, Value>,
    /// For matching.
    pub folded: Map<String, Value>,
}

/// The caller-visible text of each scope's documents, as one SQL expression.
fn visible_text(scopes: &[Scope]) -> String {
    let mut sql = String::from("(CASE d.entity_type");
    for s in scopes {
        // Kind and field names are constants of this crate, never input.
        let parts: Vec<String> = s
            .visible
            .iter()
            .map(|f| format!("d.folded->>'{f}'"))
            .collect();
        let text = if parts.is_empty() {
            "''".to_owned()
        } else {
            format!("concat_ws(' ', {})", parts.join(", "))
        };
        sql.push_str(&format!(" WHEN '{}' THEN {text}", s.kind.name));
    }
    sql.push_str(" ELSE '' END)");
    sql
}

/// Documents of the scopes that may match `q` through a field the caller can see.
pub async fn candidates(
    tx: &TenantTx,
    scopes: &[Scope],
    q: &Query,
) -> Result<Vec<Candidate>, DbErr> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    tx.conn()
        .execute_raw(stmt(
            "SELECT set_config('pg_trgm.word_similarity_threshold', $1, true)",
            vec![FUZZY_THRESHOLD.into()],
        ))
        .await?;
    // The owners each restricted type is limited to, for `search.candidates`.
    let types: Vec<String> = scopes.iter().map(|s| s.kind.name.to_owned()).collect();
    let owners: Map<String, Value> = scopes
        .iter()
        .filter_map(|s| match &s.reach {
            Reach::All => None,
            Reach::Owners(ids) => Some((
                s.kind.name.to_owned(),
                ids.iter().map(|id| Value::String(id.to_string())).collect(),
            )),
        })
        .collect();
    let mut params: Vec<SqlValue> = vec![
        tx.tenant().uuid().into(),
        q.text.clone().into(),
        types.into(),
        Value::Object(owners).into(),
        q.like().into(),
        q.prefix_tsquery().into(),
        q.digits_like().into(),
        NARROWED.into(),
    ];
    let mut p = |v: SqlValue| {
        params.push(v);
        format!("${}", params.len())
    };
    let mut reach = Vec::new();
    for s in scopes {
        let t = p(s.kind.name.into());
        match &s.reach {
            Reach::All => reach.push(format!("(d.entity_type = {t})")),
            Reach::Owners(ids) => {
                let o = p(ids.clone().into());
                reach.push(format!(
                    "(d.entity_type = {t} AND d.owner_user_id = ANY({o}))"
                ));
            }
        }
    }
    let vis = visible_text(scopes);
    // `search.candidates` narrows the rows through the GIN indexes, over every indexed field
    // and within the caller's reach; the same test then runs over the caller's visible fields
    // only, so a hidden field never makes a record match.
    let mut visible = vec![
        format!("{vis} LIKE $5"),
        format!("word_similarity($2, {vis}) >= {FUZZY_THRESHOLD}"),
    ];
    let mut prefix_first = String::new();
    if q.prefix_tsquery().is_some() {
        let prefix = format!("to_tsvector('simple', {vis}) @@ to_tsquery('simple', $6)");
        prefix_first = format!("({prefix}) DESC, ");
        visible.push(prefix);
    }
    if q.digits_like().is_some() {
        visible.push(format!("{vis} LIKE $7"));
    }
    let sql = format!(
        "SELECT d.entity_type, d.entity_id, d.fields, d.folded \
         FROM search.candidates($3, $4, $2, $5, $6, $7, $8) c \
         JOIN search.documents d ON d.tenant_id = $1 AND d.entity_type = c.entity_type \
           AND d.entity_id = c.entity_id \
         WHERE NOT d.deleted AND ({reach}) AND ({visible}) \
         ORDER BY {prefix_first}word_similarity($2, {vis}) DESC, d.entity_id \
         LIMIT {CANDIDATES}",
        reach = reach.join(" OR "),
        visible = visible.join(" OR "),
    );
    let rows = tx.conn().query_all_raw(stmt(&sql, params)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let t: String = r.try_get("", "entity_type")?;
        let Some(s) = scopes.iter().find(|s| s.kind.name == t) else {
            continue;
        };
        let fields: Value = r.try_get("", "fields")?;
        let folded: Value = r.try_get("", "folded")?;
        out.push(Candidate {
            kind: s.kind,
            id: r.try_get("", "entity_id")?,
            fields: fields.as_object().cloned().unwrap_or_default(),
            folded: folded.as_object().cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Live documents of one type in the tenant.
pub async fn count(tx: &TenantTx, kind: &Kind) -> Result<i64, DbErr> {
    let row = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT count(*) AS n FROM search.documents \
             WHERE tenant_id = $1 AND entity_type = $2 AND NOT deleted",
            vec![tx.tenant().uuid().into(), kind.name.into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// The database clock, as seconds since the epoch (the start of a rebuild).
pub async fn now(db: &Db) -> Result<f64, DbErr> {
    let row = db
        .conn()
        .query_one_raw(stmt(
            "SELECT extract(epoch FROM clock_timestamp())::float8 AS t",
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("clock".into()))?;
    row.try_get("", "t")
}

/// Ends a rebuild: documents the rebuild did not see, and that no event touched since it
/// started, are gone from the source; marks them deleted. Returns how many.
pub async fn sweep(
    tx: &TenantTx,
    kind: &Kind,
    generation: Uuid,
    started: f64,
) -> Result<u64, DbErr> {
    let r = tx
        .conn()
        .execute_raw(stmt(
            "UPDATE search.documents SET deleted = true, deleted_at = clock_timestamp(), \
             updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND entity_type = $2 AND NOT deleted \
               AND reindex_gen IS DISTINCT FROM $3 AND updated_at < to_timestamp($4)",
            vec![
                tx.tenant().uuid().into(),
                kind.name.into(),
                generation.into(),
                started.into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected())
}

/// Live documents per tenant and type across every tenant (for metrics).
pub async fn all_counts(db: &Db) -> Result<Vec<(Uuid, String, i64)>, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(stmt(
            "SELECT tenant_id, entity_type, live FROM search.document_counts()",
            vec![],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("", "tenant_id")?,
                r.try_get("", "entity_type")?,
                r.try_get("", "live")?,
            ))
        })
        .collect()
}
