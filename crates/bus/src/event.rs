use chrono::{DateTime, Utc};
use crm_kit::ids::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::trace;

/// A domain event: a CloudEvents 1.0 envelope in JSON structured mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always `"1.0"`.
    pub specversion: String,
    /// UUIDv7, so ids sort by creation time; doubles as the AMQP message id.
    pub id: Uuid,
    /// `crm/<service>`.
    pub source: String,
    /// `<entity>.<verb>`, e.g. `user.created`; also the routing key.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the change happened.
    pub time: DateTime<Utc>,
    /// The id of the entity that changed.
    pub subject: String,
    /// Always `"application/json"`.
    pub datacontenttype: String,
    /// The tenant the change belongs to.
    pub tenantid: TenantId,
    /// Who made the change, when a user or API client did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actorid: Option<Uuid>,
    /// The W3C trace context of the request that made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// What changed.
    pub data: EventData,
}

/// The change an event describes: the entity and its state before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    /// The kind of entity, e.g. `user`.
    pub entity_type: String,
    /// The entity's id.
    pub entity_id: String,
    /// The state before the change; absent on creation.
    #[serde(default)]
    pub before: Option<Value>,
    /// The state after the change; absent on deletion.
    #[serde(default)]
    pub after: Option<Value>,
}

impl Event {
    /// The CloudEvents version this envelope follows.
    pub const SPEC_VERSION: &'static str = "1.0";
    /// The content type of `data`.
    pub const DATA_CONTENT_TYPE: &'static str = "application/json";

    /// A new event, stamped now, continuing the trace of the current span if there is one.
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the envelope fields one to one; a builder would only restate them"
    )]
    pub fn new(
        service: &str,
        event_type: &str,
        tenant: TenantId,
        actor: Option<Uuid>,
        entity_type: &str,
        entity_id: impl ToString,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Event {
        let entity_id = entity_id.to_string();
        Event {
            specversion: Self::SPEC_VERSION.to_owned(),
            id: Uuid::now_v7(),
            source: format!("crm/{service}"),
            event_type: event_type.to_owned(),
            time: Utc::now(),
            subject: entity_id.clone(),
            datacontenttype: Self::DATA_CONTENT_TYPE.to_owned(),
            tenantid: tenant,
            actorid: actor,
            traceparent: trace::current_traceparent(),
            data: EventData {
                entity_type: entity_type.to_owned(),
                entity_id,
                before,
                after,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn serializes_as_a_structured_cloudevent() {
        let tenant = TenantId::new();
        let actor = Uuid::now_v7();
        let user = Uuid::now_v7();
        let event = Event::new(
            "identity",
            "user.created",
            tenant,
            Some(actor),
            "user",
            user,
            None,
            Some(json!({"email": "a@example.com"})),
        );
        let v = serde_json::to_value(&event).expect("serializable");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], event.id.to_string());
        assert_eq!(v["source"], "crm/identity");
        assert_eq!(v["type"], "user.created");
        assert_eq!(v["subject"], user.to_string());
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["tenantid"], tenant.to_string());
        assert_eq!(v["actorid"], actor.to_string());
        assert!(v.get("traceparent").is_none(), "no span, no traceparent");
        assert_eq!(v["data"]["entityType"], "user");
        assert_eq!(v["data"]["entityId"], user.to_string());
        assert_eq!(v["data"]["before"], Value::Null);
        assert_eq!(v["data"]["after"]["email"], "a@example.com");
        let time = v["time"].as_str().expect("time is a string");
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert_eq!(event.id.get_version_num(), 7);

        let back: Event = serde_json::from_value(v).expect("deserializable");
        assert_eq!(back, event);
    }
}
