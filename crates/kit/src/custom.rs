//! Custom fields: the definitions a tenant keeps per object type (stored as data by
//! accounts-contacts) and the validation of the values every write puts in a record's
//! `custom` JSON object. Every service whose records carry custom fields checks them here.

use std::collections::HashSet;

use chrono::NaiveDate;
use crm_proto::accounts as pb;
use serde_json::{Map, Value};

use crate::error::Violations;

/// Longest text value.
pub const MAX_TEXT: usize = 10_000;

/// The type of a custom field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Number,
    Date,
    Boolean,
    Select,
    Multiselect,
}

impl FieldType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Date => "date",
            FieldType::Boolean => "boolean",
            FieldType::Select => "select",
            FieldType::Multiselect => "multiselect",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => FieldType::Text,
            "number" => FieldType::Number,
            "date" => FieldType::Date,
            "boolean" => FieldType::Boolean,
            "select" => FieldType::Select,
            "multiselect" => FieldType::Multiselect,
            _ => return None,
        })
    }

    /// Whether the type takes options.
    pub fn has_options(self) -> bool {
        matches!(self, FieldType::Select | FieldType::Multiselect)
    }

    /// Reads the wire enum (`crm.accounts.v1.CustomFieldType`); unspecified or unknown: none.
    pub fn from_pb(t: i32) -> Option<Self> {
        Some(match pb::CustomFieldType::try_from(t).ok()? {
            pb::CustomFieldType::Text => FieldType::Text,
            pb::CustomFieldType::Number => FieldType::Number,
            pb::CustomFieldType::Date => FieldType::Date,
            pb::CustomFieldType::Boolean => FieldType::Boolean,
            pb::CustomFieldType::Select => FieldType::Select,
            pb::CustomFieldType::Multiselect => FieldType::Multiselect,
            pb::CustomFieldType::Unspecified => return None,
        })
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::CustomFieldType {
        match self {
            FieldType::Text => pb::CustomFieldType::Text,
            FieldType::Number => pb::CustomFieldType::Number,
            FieldType::Date => pb::CustomFieldType::Date,
            FieldType::Boolean => pb::CustomFieldType::Boolean,
            FieldType::Select => pb::CustomFieldType::Select,
            FieldType::Multiselect => pb::CustomFieldType::Multiselect,
        }
    }
}

/// One definition.
#[derive(Clone, Debug)]
pub struct Definition {
    pub key: String,
    pub field_type: FieldType,
    pub options: Vec<String>,
    pub required: bool,
}

impl Definition {
    /// The definition a `crm.accounts.v1.CustomField` describes; none for an unknown type.
    pub fn from_pb(f: &pb::CustomField) -> Option<Self> {
        Some(Self {
            key: f.key.clone(),
            field_type: FieldType::from_pb(f.r#type)?,
            options: f.options.clone(),
            required: f.required,
        })
    }
}

/// Whether a key is well formed: a lowercase letter, then lowercase letters, digits or `_`.
pub fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks one value against its definition; `field` names it in errors.
fn check_value(def: &Definition, value: &Value, field: &str, v: &mut Violations) {
    let bad = |v: &mut Violations, m: &str| v.add(field, m);
    match def.field_type {
        FieldType::Text => match value.as_str() {
            Some(s) if s.chars().count() > MAX_TEXT => {
                bad(v, &format!("must be at most {MAX_TEXT} characters"))
            }
            Some(s) if s.contains('\0') => bad(v, "must not contain the NUL character"),
            Some(_) => {}
            None => bad(v, "must be text"),
        },
        FieldType::Number => {
            if !value.as_f64().is_some_and(f64::is_finite) {
                bad(v, "must be a number")
            }
        }
        FieldType::Date => {
            let ok = value
                .as_str()
                .is_some_and(|s| s.len() == 10 && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok());
            if !ok {
                bad(v, "must be a date (YYYY-MM-DD)")
            }
        }
        FieldType::Boolean => {
            if !value.is_boolean() {
                bad(v, "must be true or false")
            }
        }
        FieldType::Select => match value.as_str() {
            Some(s) if def.options.iter().any(|o| o == s) => {}
            _ => bad(v, &format!("must be one of: {}", def.options.join(", "))),
        },
        FieldType::Multiselect => {
            let Some(items) = value.as_array() else {
                return bad(v, "must be a list of options");
            };
            let mut seen = HashSet::new();
            for item in items {
                match item.as_str() {
                    Some(s) if def.options.iter().any(|o| o == s) => {
                        if !seen.insert(s) {
                            return bad(v, &format!("lists {s:?} twice"));
                        }
                    }
                    _ => {
                        return bad(
                            v,
                            &format!("each value must be one of: {}", def.options.join(", ")),
                        );
                    }
                }
            }
        }
    }
}

/// Applies `changes` to `current` under the definitions: keys must be defined, values must
/// fit their type, `null` clears a value, and after the change every required field has a
/// value. Errors name fields as `custom.<key>`.
pub fn apply(
    defs: &[Definition],
    current: &Map<String, Value>,
    changes: &Map<String, Value>,
    v: &mut Violations,
) -> Map<String, Value> {
    let mut out: Map<String, Value> = current
        .iter()
        .filter(|(k, _)| defs.iter().any(|d| &d.key == *k))
        .map(|(k, val)| (k.clone(), val.clone()))
        .collect();
    for (key, value) in changes {
        let field = format!("custom.{key}");
        let Some(def) = defs.iter().find(|d| &d.key == key) else {
            v.add(field, "unknown custom field");
            continue;
        };
        if value.is_null() {
            out.remove(key);
            continue;
        }
        check_value(def, value, &field, v);
        out.insert(key.clone(), value.clone());
    }
    for def in defs.iter().filter(|d| d.required) {
        let empty = match out.get(&def.key) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            v.add(format!("custom.{}", def.key), "is required");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defs() -> Vec<Definition> {
        vec![
            Definition {
                key: "tier".into(),
                field_type: FieldType::Select,
                options: vec!["gold".into(), "silver".into()],
                required: true,
            },
            Definition {
                key: "score".into(),
                field_type: FieldType::Number,
                options: vec![],
                required: false,
            },
            Definition {
                key: "renewal".into(),
                field_type: FieldType::Date,
                options: vec![],
                required: false,
            },
            Definition {
                key: "tags".into(),
                field_type: FieldType::Multiselect,
                options: vec!["a".into(), "b".into()],
                required: false,
            },
        ]
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn fields(v: Violations) -> Vec<String> {
        match v.finish() {
            Ok(()) => vec![],
            Err(e) => e.fields.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn values_are_checked_against_definitions() {
        let mut v = Violations::new();
        let out = apply(
            &defs(),
            &Map::new(),
            &obj(
                json!({"tier": "gold", "score": 4.5, "renewal": "2027-02-28", "tags": ["a", "b"]}),
            ),
            &mut v,
        );
        assert!(fields(v).is_empty());
        assert_eq!(out["tier"], "gold");

        let mut v = Violations::new();
        apply(
            &defs(),
            &Map::new(),
            &obj(
                json!({"tier": "bronze", "score": "high", "renewal": "2027-02-30", "tags": ["a", "a"], "nope": 1}),
            ),
            &mut v,
        );
        assert_eq!(
            fields(v),
            [
                "custom.nope",
                "custom.renewal",
                "custom.score",
                "custom.tags",
                "custom.tier"
            ]
        );
    }

    #[test]
    fn required_fields_must_stay_filled() {
        let mut v = Violations::new();
        apply(
            &defs(),
            &obj(json!({"tier": "gold"})),
            &obj(json!({"tier": null})),
            &mut v,
        );
        assert_eq!(fields(v), ["custom.tier"]);
        let mut v = Violations::new();
        let out = apply(
            &defs(),
            &obj(json!({"tier": "gold", "score": 1, "retired": true})),
            &obj(json!({"score": null})),
            &mut v,
        );
        assert!(fields(v).is_empty());
        assert_eq!(
            Value::Object(out),
            json!({"tier": "gold"}),
            "undefined keys are dropped"
        );
    }

    #[test]
    fn types_match_the_wire_enum() {
        for t in ["text", "number", "date", "boolean", "select", "multiselect"] {
            let ft = FieldType::parse(t).unwrap();
            assert_eq!(FieldType::from_pb(ft.to_pb() as i32), Some(ft));
            assert_eq!(ft.as_str(), t);
        }
        assert_eq!(FieldType::from_pb(0), None);
        let def = Definition::from_pb(&pb::CustomField {
            key: "tier".into(),
            r#type: pb::CustomFieldType::Select as i32,
            options: vec!["gold".into()],
            required: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(def.field_type, FieldType::Select);
        assert!(def.required);
    }

    #[test]
    fn keys() {
        assert!(valid_key("tier_2"));
        assert!(!valid_key("2tier"));
        assert!(!valid_key("Tier"));
        assert!(!valid_key(""));
        assert!(!valid_key("a-b"));
    }
}
