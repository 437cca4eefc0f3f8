//! Custom fields as this service keeps them: the registry of every tenant's definitions, per
//! object type. The values' validation lives in `crm_kit::custom`, shared with the services
//! whose records carry custom fields too (opportunities in pipeline).

pub use crm_kit::custom::*;

/// Object types that carry custom fields. Accounts and contacts keep their values here;
/// opportunities keep theirs in pipeline, which reads the definitions from here.
pub const OBJECT_TYPES: &[&str] = &["account", "contact", "opportunity"];

/// Most definitions per object type of a tenant.
pub const MAX_DEFINITIONS: usize = 100;
/// Most options of a select or multiselect field.
pub const MAX_OPTIONS: usize = 200;
