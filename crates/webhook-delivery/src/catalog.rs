//! The event types an endpoint can subscribe to: one list, served by ListEventTypes and
//! checked on every subscription. Events of other types are not delivered.

/// (type, description). Add a service's events here as it lands.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    // identity
    ("tenant.created", "A tenant signed up"),
    ("user.created", "A user was added"),
    (
        "user.updated",
        "A user changed (name, role, teams, disabled)",
    ),
    ("team.created", "A team was created"),
    ("team.updated", "A team changed (name or members)"),
    ("role.created", "A custom role was created"),
    (
        "role.updated",
        "A role's permissions or field rules changed",
    ),
    ("api_client.created", "Partner credentials were created"),
    ("api_client.deleted", "Partner credentials were deleted"),
    // accounts-contacts
    ("account.created", "An account was created"),
    ("account.updated", "An account changed"),
    ("account.deleted", "An account was deleted"),
    ("account.restored", "A deleted account was restored"),
    ("contact.created", "A contact was created"),
    ("contact.updated", "A contact changed"),
    ("contact.deleted", "A contact was deleted"),
    ("contact.restored", "A deleted contact was restored"),
    ("contact.linked", "A contact was linked to an account"),
    ("contact.unlinked", "A contact was unlinked from an account"),
    ("custom_field.created", "A custom field was defined"),
    ("custom_field.updated", "A custom field changed"),
    ("custom_field.deleted", "A custom field was removed"),
    // webhooks
    (
        ENDPOINT_DISABLED,
        "A webhook endpoint was disabled because it answered 410 Gone or kept failing",
    ),
];

/// The event this service publishes when it disables an endpoint.
pub const ENDPOINT_DISABLED: &str = "webhook_endpoint.disabled";

/// Whether endpoints can subscribe to `event_type`.
pub fn contains(event_type: &str) -> bool {
    EVENT_TYPES.iter().any(|(t, _)| *t == event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (t, d) in EVENT_TYPES {
            assert!(seen.insert(*t), "{t} listed twice");
            assert!(!d.is_empty());
            let (entity, verb) = t.split_once('.').expect("entity.verb");
            assert!(!entity.is_empty() && !verb.is_empty(), "{t}");
        }
        assert!(contains("contact.created"));
        assert!(
            !contains("inbound.received"),
            "inbound events are never sent back out"
        );
    }
}
