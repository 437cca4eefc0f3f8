//! The search section of the partner API: one query box across record types, over
//! `crm.search.v1.SearchService`.

use axum::{Json as AJson, extract::State};
use crm_kit::{ApiError, error::Violations};
use crm_proto::search as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    backends::Ctx,
    dto::StdErrors,
    error::{GwResult, Query},
};

/// Record types the API names.
const TYPES: &[&str] = &["contact", "account", "opportunity", "lead", "ticket"];
/// Longest `q`, in characters.
const MAX_Q: usize = 200;
/// Hits when `limit` is absent.
const DEFAULT_LIMIT: i64 = 20;
/// Most hits one request may ask for.
const MAX_LIMIT: i64 = 100;

/// What to look for.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The text: 1 to 200 characters. Prefixes ("ana"), small typos ("jonh"), and e-mail and
    /// phone fragments match.
    #[param(min_length = 1, max_length = 200)]
    pub q: Option<String>,
    /// Comma list of record types to search: contact, account, opportunity, lead, ticket
    /// (default: all). Types without indexed records yet have no hits.
    pub types: Option<String>,
    /// Most hits, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// One record that matched.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    /// The record type: contact, account, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    /// Contact: "First Last"; account: its name.
    pub title: String,
    /// Contact: e-mail or job title; account: website or industry (only what the caller may see).
    pub subtitle: String,
    /// Relevance, 0 to 1: exact matches rank above prefix matches, prefix above fuzzy.
    pub score: f64,
}

/// Hits, best first.
#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchHit>,
}

/// Checks the parameters; errors name the REST parameter.
fn request(p: SearchParams) -> Result<pb::SearchRequest, ApiError> {
    let mut v = Violations::new();
    let q = p.q.unwrap_or_default();
    v.text("q", &q);
    if q.trim().is_empty() {
        v.add("q", "is required and must not be blank");
    } else if q.chars().count() > MAX_Q {
        v.add("q", format!("must be at most {MAX_Q} characters"));
    }
    let mut types = Vec::new();
    for t in p.types.as_deref().unwrap_or("").split(',').map(str::trim) {
        if t.is_empty() {
            continue;
        }
        if TYPES.contains(&t) {
            types.push(t.to_owned());
        } else {
            v.add(
                "types",
                format!(
                    "unknown type {:?}; one of {}",
                    t.chars().take(40).collect::<String>(),
                    TYPES.join(", ")
                ),
            );
            break;
        }
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        v.add("limit", format!("must be between 1 and {MAX_LIMIT}"));
    }
    v.finish()?;
    Ok(pb::SearchRequest {
        query: q,
        types,
        page_size: limit as i32,
    })
}

/// Searches the records the caller may read, across types.
///
/// Only records the caller may read are returned, and fields the caller's role hides are
/// neither matched nor shown.
#[utoipa::path(get, path = "/search", tag = "search", security(("bearer" = [])), params(SearchParams),
    responses((status = 200, description = "Hits, best first", body = SearchResults), StdErrors))]
async fn search(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(p): Query<SearchParams>,
) -> GwResult<AJson<SearchResults>> {
    let req = request(p)?;
    let mut client = s.backends.search(ctx.tenant())?;
    let r = client
        .search(s.backends.request(&ctx, req))
        .await?
        .into_inner();
    Ok(AJson(SearchResults {
        items: r
            .hits
            .into_iter()
            .map(|h| SearchHit {
                kind: h.r#type,
                id: h.id,
                title: h.title,
                subtitle: h.subtitle,
                score: h.score,
            })
            .collect(),
    }))
}

/// Routes behind authentication.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: Option<&str>, types: Option<&str>, limit: Option<i64>) -> SearchParams {
        SearchParams {
            q: q.map(Into::into),
            types: types.map(Into::into),
            limit,
        }
    }

    fn field(e: ApiError) -> String {
        e.fields[0].field.clone()
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(field(request(p(None, None, None)).unwrap_err()), "q");
        assert_eq!(field(request(p(Some("  "), None, None)).unwrap_err()), "q");
        let long = "x".repeat(201);
        assert_eq!(field(request(p(Some(&long), None, None)).unwrap_err()), "q");
        assert_eq!(
            field(request(p(Some("a"), Some("contact,planet"), None)).unwrap_err()),
            "types"
        );
        assert_eq!(
            field(request(p(Some("a"), None, Some(0))).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field(request(p(Some("a"), None, Some(101))).unwrap_err()),
            "limit"
        );
        let ok = request(p(Some("ana"), Some("contact, account"), None)).unwrap();
        assert_eq!(ok.page_size, 20);
        assert_eq!(ok.types, ["contact", "account"]);
    }
}
