//! Relevance: how well a query matches the fields a caller may see. Exact words rank above
//! prefixes, prefixes above fragments (e-mail, phone), fragments above typos.

use serde_json::{Map, Value};

use crate::kinds::Kind;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// A normalised query.
#[derive(Clone, Debug)]
pub struct Query {
    /// Lower-cased, whitespace collapsed.
    pub text: String,
    /// Whitespace-separated tokens of `text`.
    pub tokens: Vec<String>,
}

impl Query {
    /// Normalises `raw`; `None` when nothing is left.
    pub fn parse(raw: &str) -> Option<Self> {
        let tokens: Vec<String> = raw.split_whitespace().map(crate::kinds::fold).collect();
        if tokens.is_empty() {
            return None;
        }
        Some(Self {
            text: tokens.join(" "),
            tokens,
        })
    }

    /// A `simple` tsquery matching every word as a prefix (`ana:* & smi:*`), or `None`
    /// when the query has no word characters.
    pub fn prefix_tsquery(&self) -> Option<String> {
        let words: Vec<String> = words(&self.text)
            .map(|w| format!("{w}:*"))
            .take(16)
            .collect();
        (!words.is_empty()).then(|| words.join(" & "))
    }

    /// A LIKE pattern matching the whole query as a fragment.
    pub fn like(&self) -> String {
        format!("%{}%", escape_like(&self.text))
    }

    /// A LIKE pattern for phone fragments (the query's digits), when the query looks like one.
    pub fn digits_like(&self) -> Option<String> {
        phone_digits(&self.text).map(|d| format!("%{d}%"))
    }
}

/// The digits of a phone-like text (digits and phone punctuation, at least three digits).
fn phone_digits(t: &str) -> Option<String> {
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let phone_like = t
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    (phone_like && digits.len() >= 3).then_some(digits)
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The words of a text: runs of letters and digits.
pub fn words(t: &str) -> impl Iterator<Item = &str> {
    t.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), or
/// `None` when it exceeds `max`.
pub fn osa_distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    (d[n][m] <= max).then_some(d[n][m])
}

/// Typos allowed in a token of this many characters.
fn allowed_typos(len: usize) -> usize {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// How well one token matches one field's text (lower-cased), 0 when it does not.
fn token_score(token: &str, text: &str) -> f64 {
    if token == text {
        return 1.0;
    }
    let mut best: f64 = 0.0;
    let tlen = token.chars().count();
    for w in words(text) {
        if w == token {
            return 1.0;
        }
        let wlen = w.chars().count();
        if w.starts_with(token) {
            best = best.max(0.7 + 0.2 * tlen as f64 / wlen as f64);
        }
    }
    if best > 0.0 {
        return best;
    }
    if tlen >= 2 && text.contains(token) {
        return 0.6;
    }
    if let Some(d) = phone_digits(token)
        && text.chars().all(|c| c.is_ascii_digit() || c == ' ')
        && text.contains(&d)
    {
        return if text.split(' ').any(|t| t == d) {
            1.0
        } else {
            0.6
        };
    }
    let max = allowed_typos(tlen);
    if max == 0 {
        return 0.0;
    }
    for w in words(text) {
        if let Some(d) = osa_distance(token, w, max) {
            best = best.max(0.45 - 0.1 * d as f64);
        } else if w.chars().count() > tlen {
            // A typo in a prefix: "anastsia" still finds "anastasia".
            let prefix: String = w.chars().take(tlen).collect();
            if let Some(d) = osa_distance(token, &prefix, max) {
                best = best.max(0.35 - 0.1 * d as f64);
            }
        }
    }
    best
}

/// The score of a document for a query over its visible `fields` (folded, see
/// [`crate::kinds::fold`]): 0 when some token matches
/// no visible field; otherwise the mean of each token's best weighted match, with a whole
/// title equal to the query scoring 1.
pub fn score(kind: &Kind, visible: &[&str], fields: &Map<String, Value>, q: &Query) -> f64 {
    let texts: Vec<(f64, String)> = kind
        .fields
        .iter()
        .filter(|f| visible.contains(&f.name))
        .filter_map(|f| {
            fields
                .get(f.name)
                .and_then(Value::as_str)
                .map(|t| (f.weight, t.to_lowercase()))
        })
        .collect();
    if visible.contains(&kind.title)
        && let Some(t) = fields.get(kind.title).and_then(Value::as_str)
        && t.to_lowercase() == q.text
    {
        return 1.0;
    }
    let mut total = 0.0;
    for token in &q.tokens {
        let best = texts
            .iter()
            .map(|(w, t)| w * token_score(token, t))
            .fold(0.0, f64::max);
        if best <= 0.0 {
            return 0.0;
        }
        total += best;
    }
    // A shade below 1 so that only a whole-title match reaches it.
    (total / q.tokens.len() as f64).min(0.999)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds::CONTACT;

    fn s(fields: Value, q: &str) -> f64 {
        let all: Vec<&str> = CONTACT.fields.iter().map(|f| f.name).collect();
        score(
            &CONTACT,
            &all,
            fields.as_object().unwrap(),
            &Query::parse(q).unwrap(),
        )
    }

    #[test]
    fn exact_beats_prefix_beats_typo() {
        let john = json!({"name": "John Smith", "email": "john@example.com"});
        let exact = s(john.clone(), "john");
        let prefix = s(john.clone(), "jo");
        let typo = s(john.clone(), "jonh");
        assert!(
            exact > prefix && prefix > typo && typo > 0.0,
            "{exact} {prefix} {typo}"
        );
        assert_eq!(s(john.clone(), "John Smith"), 1.0);
        assert_eq!(s(john, "zzz"), 0.0);
    }

    #[test]
    fn fragments_of_emails_and_phones() {
        let c = json!({"name": "Ada Lovelace", "email": "ada@analytical.example",
            "phone": "+1 (555) 010-2030", "phoneDigits": "15550102030"});
        assert!(s(c.clone(), "@analytical") > 0.5);
        assert!(s(c.clone(), "ada@analytical.example") > 0.9);
        assert!(s(c.clone(), "010-2030") > 0.5);
        assert!(s(c.clone(), "555 0102") > 0.5);
        assert!(s(c, "5550102") > 0.5);
    }

    #[test]
    fn hidden_fields_do_not_match() {
        let c = json!({"name": "Ada Lovelace", "email": "secret@example.com"});
        let f = c.as_object().unwrap();
        let q = Query::parse("secret").unwrap();
        assert_eq!(score(&CONTACT, &["name"], f, &q), 0.0);
        assert!(score(&CONTACT, &["name", "email"], f, &q) > 0.0);
    }

    #[test]
    fn queries_become_safe_sql_fragments() {
        let q = Query::parse("  O'Brien   50%_x ").unwrap();
        assert_eq!(q.text, "o'brien 50%_x");
        assert_eq!(q.prefix_tsquery().unwrap(), "o:* & brien:* & 50:* & x:*");
        assert_eq!(q.like(), "%o'brien 50\\%\\_x%");
        assert!(Query::parse("  ").is_none());
        assert_eq!(Query::parse("@@").unwrap().prefix_tsquery(), None);
        assert_eq!(osa_distance("jonh", "john", 1), Some(1));
        assert_eq!(osa_distance("jonh", "joseph", 2), None);
    }
}
