//! Turns each domain event into one message per subscribed endpoint of its tenant.

use async_trait::async_trait;
use chrono::SecondsFormat;
use crm_bus::{Event, Handler, HandlerError};
use crm_kit::TenantTx;
use serde::Serialize;

use crate::{catalog, store};

/// The consumer's handler.
#[derive(Clone, Debug, Default)]
pub struct FanOut;

/// The body of a webhook (Standard Webhooks: type, timestamp, data).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    event_id: String,
    entity_type: &'a str,
    entity_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_id: Option<String>,
    before: &'a Option<serde_json::Value>,
    after: &'a Option<serde_json::Value>,
}

/// The exact bytes that will be signed and sent for `event`.
pub fn payload(event: &Event) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Body {
        kind: &event.event_type,
        timestamp: event.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        data: Data {
            event_id: event.id.to_string(),
            entity_type: &event.data.entity_type,
            entity_id: &event.data.entity_id,
            actor_id: event.actorid.map(|a| a.to_string()),
            before: &event.data.before,
            after: &event.data.after,
        },
    })
}

#[async_trait]
impl Handler for FanOut {
    async fn handle(&self, tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
        // Only catalogued types go out: this keeps the service's own bookkeeping events
        // (and inbound webhooks) from being sent back out in a loop.
        if !catalog::contains(&event.event_type) {
            return Ok(());
        }
        let endpoints = store::subscribers(tx, &event.event_type).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let body = payload(event).map_err(|e| HandlerError::Permanent(e.into()))?;
        for endpoint in endpoints {
            store::insert_delivery(tx, endpoint, event.id, &event.event_type, &body).await?;
        }
        metrics::counter!("crm_webhook_messages_total").increment(1);
        Ok(())
    }
}
