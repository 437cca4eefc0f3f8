//! The record types the index holds, and how each becomes a document: its searchable fields,
//! its title and subtitle, and the field that names its owner. Adding a type means adding a
//! [`Kind`] to [`KINDS`] and its source to `Search::source_page`.

use serde_json::{Map, Value};

/// One searchable field of a document.
#[derive(Debug)]
pub struct Field {
    /// The key in the document's `fields`.
    pub name: &'static str,
    /// REST fields of the record this text comes from: a role hiding any of them hides it.
    pub from: &'static [&'static str],
    /// Relative weight of a match in this field.
    pub weight: f64,
    /// Keep only digits (phone numbers match on digit fragments).
    pub digits: bool,
}

/// A record type in the index.
#[derive(Debug)]
pub struct Kind {
    /// The entity type, as in events and in the REST `types` parameter.
    pub name: &'static str,
    pub fields: &'static [Field],
    /// The field shown as the hit's title.
    pub title: &'static str,
    /// The first of these fields that has a visible value is the hit's subtitle.
    pub subtitle: &'static [&'static str],
    /// The record field holding the user whose scope (own/team) reaches it.
    pub owner: &'static str,
}

const fn field(name: &'static str, from: &'static [&'static str], weight: f64) -> Field {
    Field {
        name,
        from,
        weight,
        digits: false,
    }
}

pub const CONTACT: Kind = Kind {
    name: "contact",
    fields: &[
        field("name", &["firstName", "lastName"], 1.0),
        field("email", &["email"], 0.95),
        field("phone", &["phone", "phoneE164"], 0.9),
        Field {
            name: "phoneDigits",
            from: &["phone", "phoneE164"],
            weight: 0.9,
            digits: true,
        },
        field("title", &["title"], 0.8),
    ],
    title: "name",
    subtitle: &["email", "title"],
    owner: "ownerUserId",
};

pub const ACCOUNT: Kind = Kind {
    name: "account",
    fields: &[
        field("name", &["name"], 1.0),
        field("website", &["website"], 0.9),
        field("industry", &["industry"], 0.8),
    ],
    title: "name",
    subtitle: &["website", "industry"],
    owner: "ownerUserId",
};

pub const OPPORTUNITY: Kind = Kind {
    name: "opportunity",
    fields: &[
        field("name", &["name"], 1.0),
        field("stage", &["stage"], 0.5),
    ],
    title: "name",
    subtitle: &["stage"],
    owner: "ownerUserId",
};

pub const LEAD: Kind = Kind {
    name: "lead",
    fields: &[
        field("name", &["firstName", "lastName"], 1.0),
        field("email", &["email"], 0.95),
        field("company", &["company"], 0.9),
    ],
    title: "name",
    subtitle: &["company", "email"],
    owner: "ownerUserId",
};

pub const TICKET: Kind = Kind {
    name: "ticket",
    fields: &[
        field("subject", &["subject"], 1.0),
        field("description", &["description"], 0.6),
    ],
    title: "subject",
    subtitle: &["description"],
    owner: "assigneeUserId",
};

/// Every indexed type.
pub const KINDS: &[&Kind] = &[&CONTACT, &ACCOUNT, &OPPORTUNITY, &LEAD, &TICKET];

/// Every type the API names.
pub const API_TYPES: &[&str] = &["contact", "account", "opportunity", "lead", "ticket"];

/// The indexed type named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// Lower case without diacritics, so "garcia" finds "García" as an exact word.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let plain = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
            'æ' => "ae",
            'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
            'ď' | 'đ' | 'ð' => "d",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
            'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
            'ĥ' | 'ħ' => "h",
            'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
            'ĵ' => "j",
            'ķ' => "k",
            'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
            'ñ' | 'ń' | 'ņ' | 'ň' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
            'œ' => "oe",
            'ŕ' | 'ŗ' | 'ř' => "r",
            'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
            'ß' => "ss",
            'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
            'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
            'ŵ' => "w",
            'ý' | 'ÿ' | 'ŷ' => "y",
            'ź' | 'ż' | 'ž' => "z",
            'þ' => "th",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(plain);
    }
    out
}

fn text(record: &Map<String, Value>, key: &str) -> Option<String> {
    record
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Kind {
    /// The searchable text of each field of a record (REST camelCase names, as in events).
    pub fn fields_of(&self, record: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for f in self.fields {
            let parts: Vec<String> = f.from.iter().filter_map(|k| text(record, k)).collect();
            let mut value = match (self.name, f.name) {
                // A website is found by its host: the scheme is noise.
                (_, "website") => parts
                    .iter()
                    .map(|w| {
                        w.trim_start_matches("https://")
                            .trim_start_matches("http://")
                            .trim_end_matches('/')
                            .to_owned()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => parts.join(" "),
            };
            if f.digits {
                let mut seen = Vec::new();
                for p in &parts {
                    let d: String = p.chars().filter(char::is_ascii_digit).collect();
                    if !d.is_empty() && !seen.contains(&d) {
                        seen.push(d);
                    }
                }
                value = seen.join(" ");
            }
            if !value.is_empty() {
                out.insert(f.name.to_owned(), Value::String(value));
            }
        }
        out
    }

    /// The searchable fields folded for matching ([`fold`]); `fields_of` keeps them for display.
    pub fn folded(fields: &Map<String, Value>) -> Map<String, Value> {
        fields
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), Value::String(fold(v.as_str()?)))))
            .collect()
    }

    /// The owner of a record, when it has one.
    pub fn owner_of(&self, record: &Map<String, Value>) -> Option<uuid::Uuid> {
        text(record, self.owner).and_then(|s| uuid::Uuid::parse_str(&s).ok())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn contact_fields() {
        let r = json!({"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
            "phone": "+1 (555) 010-2030", "phoneE164": "+15550102030", "title": null});
        let f = CONTACT.fields_of(r.as_object().unwrap());
        assert_eq!(f["name"], "Ada Lovelace");
        assert_eq!(f["phoneDigits"], "15550102030");
        assert!(f.get("title").is_none());
        let a = json!({"name": "Acme", "website": "https://acme.example/"});
        let f = ACCOUNT.fields_of(a.as_object().unwrap());
        assert_eq!(f["website"], "acme.example");
        assert_eq!(
            fold("María GARCÍA Straße Łódź"),
            "maria garcia strasse lodz"
        );
        assert_eq!(fold("Анна 佐藤"), "анна 佐藤");
    }
}
