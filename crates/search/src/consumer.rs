//! The consumer of record events: `<type>.created|restored` index the whole record,
//! `<type>.updated` merges the changed fields, `<type>.deleted` removes it from answers.
//! Per record, the highest version seen wins, so late and repeated events change nothing.

use async_trait::async_trait;
use crm_bus::{Event, Handler, HandlerError};
use crm_kit::TenantTx;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    index::{self, Observation},
    kinds::{self, KINDS},
};

/// The consumer's service name, which is also its queue's name.
pub const SERVICE: &str = "search";

/// The routing patterns of the queue: every event of every indexed type.
pub fn bindings() -> Vec<String> {
    KINDS.iter().map(|k| format!("{}.*", k.name)).collect()
}

/// Keeps the index in step with record events.
#[derive(Debug, Default)]
pub struct IndexHandler;

fn permanent(msg: impl Into<String>) -> HandlerError {
    HandlerError::Permanent(anyhow::anyhow!(msg.into()))
}

/// The observation an event makes, or `None` for events that do not change documents.
pub fn observation(event: &Event) -> Result<Option<Observation>, HandlerError> {
    let Some((entity, verb)) = event.event_type.split_once('.') else {
        return Ok(None);
    };
    let Some(kind) = kinds::kind(entity) else {
        return Ok(None);
    };
    let (state, deleted, full) = match verb {
        "created" | "restored" => (&event.data.after, Some(false), true),
        "updated" => (&event.data.after, None, false),
        "deleted" => (&event.data.before, Some(true), true),
        // Links, bulk summaries and other events carry no indexed field.
        _ => return Ok(None),
    };
    let Some(Value::Object(record)) = state else {
        return Err(permanent(format!(
            "{} without its record",
            event.event_type
        )));
    };
    let id = Uuid::parse_str(&event.data.entity_id)
        .map_err(|_| permanent(format!("{}: entity id is not a uuid", event.event_type)))?;
    let Some(mut version) = record.get("version").and_then(Value::as_i64) else {
        return Err(permanent(format!("{} without a version", event.event_type)));
    };
    // `before` of a deletion is the record as it was; the deletion itself is the next version.
    if verb == "deleted" {
        version += 1;
    }
    Ok(Some(Observation {
        kind,
        id,
        version,
        record: record.clone(),
        full,
        deleted,
        reindex_gen: None,
    }))
}

#[async_trait]
impl Handler for IndexHandler {
    async fn handle(&self, tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
        if let Some(obs) = observation(event)? {
            index::apply(tx, obs).await?;
            metrics::counter!("crm_search_events_indexed_total").increment(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crm_kit::TenantId;
    use serde_json::json;

    use super::*;

    fn event(t: &str, before: Option<Value>, after: Option<Value>) -> Event {
        Event::new(
            "accounts-contacts",
            t,
            TenantId::new(),
            None,
            t.split('.').next().unwrap(),
            Uuid::now_v7(),
            before,
            after,
        )
    }

    #[test]
    fn events_become_observations() {
        let o = observation(&event(
            "contact.deleted",
            Some(json!({"firstName": "A", "version": 3})),
            None,
        ))
        .unwrap()
        .unwrap();
        assert_eq!((o.version, o.deleted, o.full), (4, Some(true), true));
        let o = observation(&event(
            "account.updated",
            Some(json!({"name": "A", "version": 1})),
            Some(json!({"name": "B", "version": 2})),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((o.version, o.deleted, o.full), (2, None, false));
        assert!(
            observation(&event("contact.linked", None, Some(json!({}))))
                .unwrap()
                .is_none()
        );
        assert!(observation(&event("contact.created", None, Some(json!({})))).is_err());
        assert_eq!(
            bindings(),
            [
                "contact.*",
                "account.*",
                "opportunity.*",
                "lead.*",
                "ticket.*"
            ]
        );
    }
}
