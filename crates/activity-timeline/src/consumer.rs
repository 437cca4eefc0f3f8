//! The consumer of every domain event: each one is appended to the audit log, updates the
//! record and relation projections, and becomes an entry on the timeline of the record it is
//! about (for activities: their subject) and of the accounts that record belongs to.
//!
//! Entries are written fan-out, once per timeline, so reading a timeline is one index range
//! scan. A contact or opportunity newly related to an account brings its earlier entries
//! onto the account's timeline. Everything happens in the transaction that marks the event
//! processed, and entries are unique per (tenant, event, record): a redelivered event never
//! shows twice. An entry's time is the event's `time`, so late events land in their place.

use async_trait::async_trait;
use crm_bus::{Event, Handler, HandlerError};
use crm_kit::TenantTx;
use serde_json::Value;
use uuid::Uuid;

use crate::store::{self, NewEntry};

/// The consumer's service name, which is also its queue's name.
pub const SERVICE: &str = "activity-timeline";

/// Record types that have a timeline.
pub const RECORD_TYPES: &[&str] = &["account", "contact", "opportunity", "lead", "ticket"];

/// Record types whose timeline entries also show on their accounts' timelines.
const ACCOUNT_CHILDREN: &[&str] = &["contact", "opportunity", "ticket"];

/// The routing patterns of the queue: every event.
pub fn bindings() -> Vec<String> {
    vec!["#".to_owned()]
}

/// Keeps timelines, projections and the audit log in step with events.
#[derive(Debug, Default)]
pub struct TimelineHandler;

fn uuid_at(v: Option<&Value>, key: &str) -> Option<Option<Uuid>> {
    let v = v?.as_object()?.get(key)?;
    Some(v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
}

fn str_at<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a str> {
    v?.as_object()?.get(key)?.as_str()
}

/// The record an event's entry belongs to first: the entity itself, or an activity's subject.
fn record_of(event: &Event) -> Option<(&'static str, Uuid)> {
    let data = &event.data;
    if data.entity_type == "activity" {
        let state = data.after.as_ref().or(data.before.as_ref());
        let kind = str_at(state, "subjectType")?;
        let kind = RECORD_TYPES.iter().find(|k| **k == kind)?;
        let id = uuid_at(state, "subjectId").flatten()?;
        return Some((kind, id));
    }
    let kind = RECORD_TYPES.iter().find(|k| **k == data.entity_type)?;
    Some((kind, Uuid::parse_str(&data.entity_id).ok()?))
}

/// Updates the relation projection (which account a contact or opportunity belongs to) from
/// an event about a record.
async fn project(
    tx: &TenantTx,
    event: &Event,
    kind: &str,
    id: Uuid,
    verb: &str,
) -> Result<(), HandlerError> {
    let data = &event.data;
    let after = data.after.as_ref();
    if !ACCOUNT_CHILDREN.contains(&kind) {
        return Ok(());
    }
    match verb {
        "linked" => {
            if let Some(Some(account)) = uuid_at(after, "accountId") {
                store::link_account(tx, kind, id, account, "link").await?;
            }
        }
        "unlinked" => {
            if let Some(Some(account)) = uuid_at(data.before.as_ref(), "accountId") {
                store::unlink_account(tx, kind, id, account).await?;
            }
        }
        _ => {
            if let Some(account) = uuid_at(after, "accountId") {
                store::set_primary_account(tx, kind, id, account).await?;
            }
        }
    }
    Ok(())
}

/// Applies one event.
pub async fn apply(tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
    let data = &event.data;
    let verb = event
        .event_type
        .split_once('.')
        .map_or(event.event_type.as_str(), |(_, v)| v);
    store::append_audit(
        tx,
        event.id,
        event.actorid,
        &data.entity_type,
        &data.entity_id,
        verb,
        &event.event_type,
        data.before.as_ref(),
        data.after.as_ref(),
        event.time,
    )
    .await?;
    let Some((kind, id)) = record_of(event) else {
        return Ok(());
    };
    let is_activity = data.entity_type == "activity";
    let mut accounts_before = Vec::new();
    if ACCOUNT_CHILDREN.contains(&kind) {
        accounts_before = store::accounts_of(tx, kind, id).await?;
    }
    if !is_activity {
        project(tx, event, kind, id, verb).await?;
    }
    let mut accounts = accounts_before.clone();
    if ACCOUNT_CHILDREN.contains(&kind) {
        for a in store::accounts_of(tx, kind, id).await? {
            if !accounts_before.contains(&a) {
                // Newly related: the record's history comes along.
                store::copy_entries_to_account(tx, kind, id, a).await?;
                accounts.push(a);
            }
        }
    }
    let entity_id = if is_activity {
        Uuid::parse_str(&data.entity_id).map_err(|_| {
            HandlerError::Permanent(anyhow::anyhow!("activity event without an activity id"))
        })?
    } else {
        id
    };
    let owner = if is_activity {
        uuid_at(data.after.as_ref().or(data.before.as_ref()), "ownerUserId").flatten()
    } else {
        None
    };
    let entry = |record_type, record_id| NewEntry {
        record_type,
        record_id,
        event_id: event.id,
        event_type: &event.event_type,
        entity_type: &data.entity_type,
        entity_id,
        action: verb,
        actor_id: event.actorid,
        owner_user_id: owner,
        before: data.before.as_ref(),
        after: data.after.as_ref(),
        occurred_at: event.time,
    };
    store::insert_entry(tx, &entry(kind, id)).await?;
    for a in accounts {
        store::insert_entry(tx, &entry("account", a)).await?;
    }
    metrics::counter!("crm_timeline_events_total").increment(1);
    Ok(())
}

#[async_trait]
impl Handler for TimelineHandler {
    async fn handle(&self, tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
        apply(tx, event).await
    }
}

#[cfg(test)]
mod tests {
    use crm_kit::TenantId;
    use serde_json::json;

    use super::*;

    fn event(t: &str, entity: &str, id: Uuid, after: Option<Value>) -> Event {
        Event::new("x", t, TenantId::new(), None, entity, id, None, after)
    }

    #[test]
    fn events_name_their_record() {
        let c = Uuid::now_v7();
        assert_eq!(
            record_of(&event("contact.updated", "contact", c, None)),
            Some(("contact", c))
        );
        let a = Uuid::now_v7();
        let e = event(
            "activity.logged",
            "activity",
            Uuid::now_v7(),
            Some(json!({"subjectType": "opportunity", "subjectId": a})),
        );
        assert_eq!(record_of(&e), Some(("opportunity", a)));
        assert_eq!(
            record_of(&event("user.created", "user", c, None)),
            None,
            "users have no timeline"
        );
        assert_eq!(bindings(), ["#"]);
    }
}
