//! Roles and what they grant: per object type read/create/update/delete/export with a scope,
//! plus field rules. The built-in roles every tenant starts with live here.

use serde::{Deserialize, Serialize};

/// Object types a grant can name.
pub const OBJECT_TYPES: &[&str] = &[
    "account",
    "contact",
    "opportunity",
    "lead",
    "ticket",
    "activity",
    "pipeline",
    "report",
    "custom_field",
    "webhook",
    "import",
    "audit_log",
    "user",
    "team",
    "role",
    "api_client",
    "security_event",
];

/// Actions a grant can name.
pub const ACTIONS: &[&str] = &["read", "create", "update", "delete", "export"];

/// How far a grant reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Own,
    Team,
    All,
}

/// One grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub object_type: String,
    pub action: String,
    pub scope: Scope,
}

/// What a field rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAccess {
    Hidden,
    ReadOnly,
}

/// A field rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRule {
    pub object_type: String,
    pub field: String,
    pub access: FieldAccess,
}

/// A built-in role.
pub struct BuiltinRole {
    pub key: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub grants: Vec<Grant>,
    pub field_rules: Vec<FieldRule>,
}

const CRM_OBJECTS: &[&str] = &[
    "account",
    "contact",
    "opportunity",
    "lead",
    "ticket",
    "activity",
];

fn grants(objects: &[&str], actions: &[&str], scope: Scope) -> Vec<Grant> {
    objects
        .iter()
        .flat_map(|o| {
            actions.iter().map(move |a| Grant {
                object_type: (*o).to_owned(),
                action: (*a).to_owned(),
                scope,
            })
        })
        .collect()
}

/// The roles every tenant starts with.
pub fn builtin_roles() -> Vec<BuiltinRole> {
    let all = ACTIONS;
    let read = &["read"][..];
    vec![
        BuiltinRole {
            key: "admin",
            name: "Administrator",
            description: "Everything, including users, roles, API clients and security events",
            grants: grants(OBJECT_TYPES, all, Scope::All),
            field_rules: vec![],
        },
        BuiltinRole {
            key: "sales_manager",
            name: "Sales manager",
            description: "Every CRM record of the tenant, reports and exports",
            grants: [
                grants(CRM_OBJECTS, all, Scope::All),
                grants(
                    &["pipeline", "report", "custom_field", "user", "team", "role"],
                    read,
                    Scope::All,
                ),
                grants(&["import"], &["create", "read"], Scope::All),
            ]
            .concat(),
            field_rules: vec![],
        },
        BuiltinRole {
            key: "sales_rep",
            name: "Sales representative",
            description: "Their own accounts, contacts, deals, leads and activities",
            grants: [
                grants(
                    &["account", "contact", "opportunity", "lead", "activity"],
                    &["read", "create", "update", "delete"],
                    Scope::Own,
                ),
                grants(&["ticket"], read, Scope::Team),
                grants(
                    &["pipeline", "report", "custom_field", "user", "team"],
                    read,
                    Scope::All,
                ),
            ]
            .concat(),
            field_rules: vec![],
        },
        BuiltinRole {
            key: "support_agent",
            name: "Support agent",
            description: "Their team's tickets; reads contacts and accounts; no deal amounts",
            grants: [
                grants(&["ticket"], &["read", "create", "update"], Scope::Team),
                grants(&["activity"], &["read", "create", "update"], Scope::Own),
                grants(&["contact", "account"], read, Scope::All),
                grants(&["opportunity"], read, Scope::Team),
                grants(
                    &["pipeline", "custom_field", "user", "team"],
                    read,
                    Scope::All,
                ),
            ]
            .concat(),
            field_rules: vec![FieldRule {
                object_type: "opportunity".into(),
                field: "amountCents".into(),
                access: FieldAccess::Hidden,
            }],
        },
        BuiltinRole {
            key: "read_only",
            name: "Read only",
            description: "Reads every CRM record; changes nothing",
            grants: grants(
                &[
                    "account",
                    "contact",
                    "opportunity",
                    "lead",
                    "ticket",
                    "activity",
                    "pipeline",
                    "report",
                    "custom_field",
                    "user",
                    "team",
                ],
                read,
                Scope::All,
            ),
            field_rules: vec![],
        },
    ]
}

/// The widest scope a set of grants gives for an action on an object type.
pub fn scope_for(grants: &[Grant], object_type: &str, action: &str) -> Option<Scope> {
    grants
        .iter()
        .filter(|g| g.object_type == object_type && g.action == action)
        .map(|g| g.scope)
        .max()
}

/// Checks grants for validity, naming the offending field path.
pub fn validate_grants(grants: &[Grant], rules: &[FieldRule], v: &mut crm_kit::error::Violations) {
    for (i, g) in grants.iter().enumerate() {
        if !OBJECT_TYPES.contains(&g.object_type.as_str()) {
            v.add(
                format!("permissions[{i}].object_type"),
                format!("unknown object type {:?}", g.object_type),
            );
        }
        if !ACTIONS.contains(&g.action.as_str()) {
            v.add(
                format!("permissions[{i}].action"),
                format!(
                    "unknown action {:?}; one of read, create, update, delete, export",
                    g.action
                ),
            );
        }
    }
    for (i, r) in rules.iter().enumerate() {
        if !OBJECT_TYPES.contains(&r.object_type.as_str()) {
            v.add(
                format!("field_rules[{i}].object_type"),
                format!("unknown object type {:?}", r.object_type),
            );
        }
        if r.field.trim().is_empty() || r.field.len() > 100 || r.field.contains('\0') {
            v.add(
                format!("field_rules[{i}].field"),
                "must be 1 to 100 characters, with no NUL character",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_grant_what_their_names_say() {
        let roles = builtin_roles();
        let get = |k: &str| roles.iter().find(|r| r.key == k).unwrap();
        assert_eq!(
            scope_for(&get("admin").grants, "role", "update"),
            Some(Scope::All)
        );
        assert_eq!(
            scope_for(&get("sales_rep").grants, "contact", "read"),
            Some(Scope::Own)
        );
        assert_eq!(
            scope_for(&get("sales_manager").grants, "contact", "read"),
            Some(Scope::All)
        );
        assert_eq!(
            scope_for(&get("read_only").grants, "contact", "update"),
            None
        );
        assert_eq!(scope_for(&get("sales_rep").grants, "user", "create"), None);
        assert!(
            get("support_agent")
                .field_rules
                .iter()
                .any(|r| r.field == "amountCents")
        );
    }
}
