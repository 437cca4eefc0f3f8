//! The consumer of other services' events: `account.*` keeps the projection of account
//! names that lists show; `lead.submitted` (web-to-lead forms) becomes a new lead;
//! `custom_field.deleted` of an opportunity field removes the values stored under its key.
//! Each event is handled once (the bus records processed ids in the same transaction), and a
//! lead made from an event also remembers its id.

use async_trait::async_trait;
use crm_bus::{Event, Handler, HandlerError};
use crm_kit::TenantTx;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    custom, service,
    store::{self, Kind, LeadRow, Set},
};

/// The consumer's service name, which is also its queue's name.
pub const SERVICE: &str = "pipeline";

/// The routing patterns of the queue.
pub fn bindings() -> Vec<String> {
    vec![
        "account.*".into(),
        "lead.submitted".into(),
        "custom_field.deleted".into(),
    ]
}

/// Applies account and web-to-lead events.
#[derive(Debug, Default)]
pub struct PipelineHandler;

fn permanent(msg: impl Into<String>) -> HandlerError {
    HandlerError::Permanent(anyhow::anyhow!(msg.into()))
}

fn text(v: Option<&Value>, max: usize) -> Option<String> {
    v.and_then(Value::as_str)
        .map(|s| s.trim().replace('\0', ""))
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(max).collect())
}

async fn account(tx: &TenantTx, event: &Event, verb: &str) -> Result<(), HandlerError> {
    let id = Uuid::parse_str(&event.data.entity_id)
        .map_err(|_| permanent(format!("{}: entity id is not a uuid", event.event_type)))?;
    let (state, deleted) = match verb {
        "created" | "restored" | "updated" => (&event.data.after, false),
        "deleted" => (&event.data.before, true),
        _ => return Ok(()),
    };
    let Some(Value::Object(record)) = state else {
        return Err(permanent(format!(
            "{} without its record",
            event.event_type
        )));
    };
    let Some(mut version) = record.get("version").and_then(Value::as_i64) else {
        return Err(permanent(format!("{} without a version", event.event_type)));
    };
    // `before` of a deletion is the record as it was; the deletion itself is the next version.
    if deleted {
        version += 1;
    }
    let name = record.get("name").and_then(Value::as_str);
    store::observe_account(tx, id, name, version, deleted).await?;
    Ok(())
}

async fn submitted_lead(tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
    if store::lead_from_event(tx, event.id).await? {
        return Ok(());
    }
    let after = event.data.after.as_ref();
    let lead = after.and_then(|a| a.get("lead"));
    let Some(last) = text(lead.and_then(|l| l.get("lastName")), 200) else {
        return Err(permanent("lead.submitted without lastName"));
    };
    let email = text(lead.and_then(|l| l.get("email")), 254).map(|e| e.to_lowercase());
    let source = text(lead.and_then(|l| l.get("source")), 100)
        .or_else(|| text(after.and_then(|a| a.get("source")), 100))
        .unwrap_or_else(|| "web".to_owned());
    let id = Uuid::now_v7();
    store::insert(
        tx,
        Kind::Lead,
        id,
        vec![
            Set::new(
                "first_name",
                text(lead.and_then(|l| l.get("firstName")), 200).unwrap_or_default(),
            ),
            Set::new("last_name", last),
            Set::new("email", email),
            Set::new("company", text(lead.and_then(|l| l.get("company")), 200)),
            Set::new("source", source),
            Set::new("status", "new"),
            Set::new("source_event_id", event.id),
        ],
        None,
    )
    .await?;
    let l: LeadRow = store::fetch(tx, Kind::Lead, id, false, false)
        .await?
        .ok_or_else(|| permanent("inserted lead vanished"))?;
    service::emit(tx, None, "lead.created", id, None, Some(l.to_json()))
        .await
        .map_err(|e| HandlerError::Transient(anyhow::anyhow!(e.message)))?;
    metrics::counter!("crm_pipeline_leads_submitted_total").increment(1);
    Ok(())
}

async fn deleted_custom_field(tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
    let Some(Value::Object(field)) = &event.data.before else {
        return Err(permanent("custom_field.deleted without its definition"));
    };
    if field.get("objectType").and_then(Value::as_str) != Some(custom::OBJECT_TYPE) {
        return Ok(());
    }
    let Some(key) = field.get("key").and_then(Value::as_str) else {
        return Err(permanent("custom_field.deleted without a key"));
    };
    store::remove_custom_key(tx, key, event.time).await?;
    Ok(())
}

#[async_trait]
impl Handler for PipelineHandler {
    async fn handle(&self, tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
        match event.event_type.split_once('.') {
            Some(("account", verb)) => account(tx, event, verb).await,
            Some(("lead", "submitted")) => submitted_lead(tx, event).await,
            Some(("custom_field", "deleted")) => deleted_custom_field(tx, event).await,
            _ => Ok(()),
        }
    }
}
