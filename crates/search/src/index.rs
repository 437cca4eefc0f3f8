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
const CANDIDATES: u64 = 500;

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
    let fields = obs.kind.fields_of(&record);
    let folded = Kind::folded(&fields);
    let owner = obs.kind.owner_of(&record);
    let trgm_text = folded
        .values()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let title = fields
        .get(obs.kind.title)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut values = key();
    values.extend([
        new_version.into(),
        owner.into(),
        Value::Object(record).into(),
        Value::Object(fields).into(),
        title.into(),
        Value::Object(folded).into(),
        trgm_text.into(),
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
    let mut params: Vec<SqlValue> = vec![tx.tenant().uuid().into(), q.text.clone().into()];
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
    let like = p(q.like().into());
    let tsq = q.prefix_tsquery().map(|t| p(t.into()));
    let digits = q.digits_like().map(|d| p(d.into()));
    let vis = visible_text(scopes);
    // The same test twice: over every indexed field (the GIN indexes narrow the rows), then
    // over the caller's visible fields only.
    let matches = |text: &str, tsv: &str, fuzzy: &str| {
        let mut m = vec![format!("{text} LIKE {like}"), fuzzy.to_owned()];
        if let Some(t) = &tsq {
            m.push(format!("{tsv} @@ to_tsquery('simple', {t})"));
        }
        if let Some(d) = &digits {
            m.push(format!("{text} LIKE {d}"));
        }
        format!("({})", m.join(" OR "))
    };
    let indexed = matches("d.trgm_text", "d.tsv", "$2 <% d.trgm_text");
    let visible = matches(
        &vis,
        &format!("to_tsvector('simple', {vis})"),
        &format!("word_similarity($2, {vis}) >= {FUZZY_THRESHOLD}"),
    );
    let prefix_first = match &tsq {
        Some(t) => format!("(to_tsvector('simple', {vis}) @@ to_tsquery('simple', {t})) DESC, "),
        None => String::new(),
    };
    let sql = format!(
        "SELECT d.entity_type, d.entity_id, d.fields, d.folded FROM search.documents d \
         WHERE d.tenant_id = $1 AND NOT d.deleted AND ({reach}) AND {indexed} AND {visible} \
         ORDER BY {prefix_first}word_similarity($2, {vis}) DESC, d.entity_id \
         LIMIT {CANDIDATES}",
        reach = reach.join(" OR "),
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
