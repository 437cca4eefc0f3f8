//! AIP-160 filters over an allow-list of fields, compiled to SQL with bound parameters.
//!
//! Supported: comparisons `field op value` with `=`, `!=`, `<`, `<=`, `>`, `>=` and `:`
//! (has: text contains, list contains), joined by `AND`, `OR`, `NOT` (or `-`) and
//! parentheses; values are "strings", numbers, `true`, `false` and `null`.

use sea_orm::Value as SqlValue;

use crate::{
    ApiError, ApiResult,
    custom::{Definition, FieldType},
};

/// Longest filter accepted.
pub const MAX_LEN: usize = 2_000;
/// Most comparisons in one filter.
pub const MAX_TERMS: usize = 50;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Has,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Has => "~~*",
        }
    }
}

/// A literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp { field: String, op: Op, value: Lit },
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Lit),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::invalid("filter", message)
}

fn lex(s: &str) -> ApiResult<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '-' if chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '(') =>
            {
                out.push(Tok::Not);
                i += 1;
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1;
            }
            ':' => {
                out.push(Tok::Op(Op::Has));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2;
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                out.push(Tok::Op(match (c, eq) {
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    (_, true) => Op::Ge,
                    _ => Op::Gt,
                }));
                i += if eq { 2 } else { 1 };
            }
            '"' | '\'' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(bad("unterminated string")),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(e) => text.push(*e),
                                None => return Err(bad("unterminated string")),
                            }
                            i += 2;
                        }
                        Some(q) if *q == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            text.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Lit(Lit::Str(text)));
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n: f64 = text
                    .parse()
                    .map_err(|_| bad(format!("{text:?} is not a number")))?;
                if !n.is_finite() {
                    return Err(bad(format!("{text:?} is not a finite number")));
                }
                out.push(Tok::Lit(Lit::Num(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "AND" => Tok::And,
                    "OR" => Tok::Or,
                    "NOT" => Tok::Not,
                    "true" => Tok::Lit(Lit::Bool(true)),
                    "false" => Tok::Lit(Lit::Bool(false)),
                    "null" => Tok::Lit(Lit::Null),
                    _ => Tok::Ident(word),
                });
            }
            other => return Err(bad(format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    terms: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> ApiResult<Expr> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> ApiResult<Expr> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                }
                // AIP-160: juxtaposed terms are a conjunction.
                Some(Tok::Ident(_) | Tok::Open | Tok::Not) => {}
                _ => break,
            }
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> ApiResult<Expr> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(bad("nested too deeply"));
        }
        let e = match self.next() {
            Some(Tok::Not) => Expr::Not(Box::new(self.unary()?)),
            Some(Tok::Open) => {
                let e = self.or()?;
                if self.next() != Some(Tok::Close) {
                    return Err(bad("missing closing parenthesis"));
                }
                e
            }
            Some(Tok::Ident(field)) => {
                let op = match self.next() {
                    Some(Tok::Op(op)) => op,
                    _ => {
                        return Err(bad(format!(
                            "expected an operator (=, !=, <, <=, >, >=, :) after {field}"
                        )));
                    }
                };
                let value = match self.next() {
                    Some(Tok::Lit(l)) => l,
                    // A bare word is a string value (AIP-160 allows unquoted text).
                    Some(Tok::Ident(w)) => Lit::Str(w),
                    _ => return Err(bad(format!("expected a value after {field}"))),
                };
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return Err(bad(format!("at most {MAX_TERMS} comparisons")));
                }
                Expr::Cmp { field, op, value }
            }
            Some(t) => return Err(bad(format!("unexpected {t:?}"))),
            None => return Err(bad("ends too early")),
        };
        self.depth -= 1;
        Ok(e)
    }
}

/// Parses a filter; empty means none.
pub fn parse(s: &str) -> ApiResult<Option<Expr>> {
    if s.len() > MAX_LEN {
        return Err(bad(format!("must be at most {MAX_LEN} characters")));
    }
    if s.contains('\0') {
        return Err(bad("must not contain the NUL character"));
    }
    let toks = lex(s)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        terms: 0,
        depth: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(bad(format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(Some(e))
}

/// What kind of column a filterable field is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Uuid,
    Time,
    /// A calendar date, compared with "YYYY-MM-DD".
    Date,
    /// A whole number.
    Integer,
}

/// One field a filter may name.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The name in filters and order_by (snake_case, as in the proto).
    pub name: &'static str,
    /// The REST name, which field rules use.
    pub rest: &'static str,
    pub column: &'static str,
    pub kind: Kind,
}

/// How to resolve and police field names while compiling.
pub struct Schema<'a> {
    pub fields: &'a [Field],
    pub custom: &'a [Definition],
    /// Whether the caller may not see a field (REST name).
    pub hidden: &'a (dyn Fn(&str) -> bool + Sync),
    /// Where the records' custom values are indexed, when they are.
    pub custom_index: Option<CustomIndex<'a>>,
}

/// A table of custom-value rows (`tenant_id`, `record_id`, `object_type`, `key`, and `v`, the
/// value as `value_fn` turns a JSON value into sortable text) indexed on (tenant, object
/// type, key, v). Under row-level security the JSONB operators cannot use an index (they
/// are not leakproof); text comparisons on `v` can. A selective comparison of a custom
/// field is first narrowed through that index, then checked as written.
#[derive(Clone, Copy, Debug)]
pub struct CustomIndex<'a> {
    pub table: &'a str,
    pub object_type: &'a str,
    pub value_fn: &'a str,
}

/// The resolved target of a name.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Column(&'a Field),
    Custom(&'a Definition),
}

impl Schema<'_> {
    /// Resolves a field name, refusing unknown and hidden ones; `param` names the parameter.
    pub fn resolve(&self, name: &str, param: &str) -> ApiResult<Target<'_>> {
        if let Some(key) = name.strip_prefix("custom.") {
            let def =
                self.custom.iter().find(|d| d.key == key).ok_or_else(|| {
                    ApiError::invalid(param, format!("unknown custom field {key:?}"))
                })?;
            if (self.hidden)(name) {
                return Err(hidden(param, name));
            }
            return Ok(Target::Custom(def));
        }
        let f = self.fields.iter().find(|f| f.name == name).ok_or_else(|| {
            ApiError::invalid(
                param,
                format!(
                    "unknown field {name:?}; one of {}, custom.<key>",
                    self.fields
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if (self.hidden)(f.rest) {
            return Err(hidden(param, name));
        }
        Ok(Target::Column(f))
    }
}

/// The refusal of a field the caller's role hides, naming the parameter.
pub fn hidden(param: &str, name: &str) -> ApiError {
    ApiError::permission_denied(format!("{param}: your role may not see {name}")).with_fields(vec![
        crate::error::FieldViolation {
            field: param.to_owned(),
            message: format!("your role may not see {name}"),
        },
    ])
}

/// Compiles a filter to a SQL condition over alias `t`, appending its parameters.
pub fn compile(e: &Expr, schema: &Schema<'_>, params: &mut Vec<SqlValue>) -> ApiResult<String> {
    Ok(match e {
        Expr::And(a, b) => format!(
            "({} AND {})",
            compile(a, schema, params)?,
            compile(b, schema, params)?
        ),
        Expr::Or(a, b) => format!(
            "({} OR {})",
            compile(a, schema, params)?,
            compile(b, schema, params)?
        ),
        Expr::Not(a) => format!("(NOT COALESCE({}, false))", compile(a, schema, params)?),
        Expr::Cmp { field, op, value } => {
            let target = schema.resolve(field, "filter")?;
            let cond = compare(target, field, *op, value, params)?;
            match (target, schema.custom_index) {
                (Target::Custom(d), Some(ix)) => match narrow(ix, d, *op, value, params) {
                    Some(n) => format!("({n} AND {cond})"),
                    None => cond,
                },
                _ => cond,
            }
        }
    })
}

/// The index condition that narrows a custom comparison to the records it may hold for:
/// every record it holds for has a row in `ix` that the condition finds. Equality of
/// numbers, texts, options, dates and booleans, and ranges of numbers (the sortable text
/// of a number keeps its order, so an inclusive bound keeps every match); other
/// comparisons have none and scan.
fn narrow(
    ix: CustomIndex<'_>,
    d: &Definition,
    op: Op,
    value: &Lit,
    params: &mut Vec<SqlValue>,
) -> Option<String> {
    let (cmp, bound) = match (d.field_type, op, value) {
        (FieldType::Number, Op::Eq, Lit::Num(_)) => ("=", ""),
        // Number rows are 'n' and 16 hex digits: at least 'n', below 'o'.
        (FieldType::Number, Op::Lt | Op::Le, Lit::Num(_)) => ("<=", " AND c.v >= 'n'"),
        (FieldType::Number, Op::Gt | Op::Ge, Lit::Num(_)) => (">=", " AND c.v < 'o'"),
        (FieldType::Text | FieldType::Select | FieldType::Date, Op::Eq, Lit::Str(_)) => ("=", ""),
        (FieldType::Boolean, Op::Eq | Op::Has, Lit::Bool(_)) => ("=", ""),
        _ => return None,
    };
    let json = match value {
        Lit::Num(n) => serde_json::json!(n),
        Lit::Str(s) => serde_json::json!(s),
        Lit::Bool(b) => serde_json::json!(b),
        _ => return None,
    };
    let p = push(params, json);
    // Names come from the caller's constants and validated keys, safe to inline.
    Some(format!(
        "EXISTS (SELECT 1 FROM {table} c WHERE c.tenant_id = t.tenant_id AND c.record_id = t.id \
         AND c.object_type = '{object}' AND c.key = '{key}' AND c.v {cmp} {value_fn}({p}){bound})",
        table = ix.table,
        object = ix.object_type,
        key = d.key,
        value_fn = ix.value_fn,
    ))
}

fn push(params: &mut Vec<SqlValue>, v: impl Into<SqlValue>) -> String {
    params.push(v.into());
    format!("${}", params.len())
}

fn like_pattern(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn text_of(name: &str, value: &Lit) -> ApiResult<String> {
    match value {
        Lit::Str(s) => Ok(s.clone()),
        _ => Err(bad(format!("{name} compares with a quoted string"))),
    }
}

fn compare(
    target: Target<'_>,
    name: &str,
    op: Op,
    value: &Lit,
    params: &mut Vec<SqlValue>,
) -> ApiResult<String> {
    if *value == Lit::Null {
        let col = match &target {
            Target::Column(f) => format!("t.{}", f.column),
            Target::Custom(d) => format!("t.custom -> '{}'", d.key),
        };
        return match op {
            Op::Eq => Ok(format!("({col} IS NULL)")),
            Op::Ne => Ok(format!("({col} IS NOT NULL)")),
            _ => Err(bad(format!("{name} compares with null only by = or !="))),
        };
    }
    match target {
        Target::Column(f) => {
            let col = format!("t.{}", f.column);
            match f.kind {
                Kind::Text => {
                    let s = text_of(name, value)?;
                    if op == Op::Has {
                        let p = push(params, like_pattern(&s));
                        return Ok(format!("({col} ILIKE {p})"));
                    }
                    let p = push(params, s);
                    if op == Op::Ne {
                        return Ok(format!("({col} IS DISTINCT FROM {p})"));
                    }
                    Ok(format!("({col} {} {p})", op.sql()))
                }
                Kind::Uuid => {
                    let s = text_of(name, value)?;
                    let id = uuid::Uuid::parse_str(&s)
                        .map_err(|_| bad(format!("{name} must be compared with an id")))?;
                    let p = push(params, id);
                    match op {
                        Op::Eq | Op::Has => Ok(format!("({col} = {p})")),
                        Op::Ne => Ok(format!("({col} IS DISTINCT FROM {p})")),
                        _ => Err(bad(format!("{name} compares only by = or !="))),
                    }
                }
                Kind::Time => {
                    let s = text_of(name, value)?;
                    let t = chrono::DateTime::parse_from_rfc3339(&s)
                        .map_err(|_| bad(format!("{name} compares with an RFC 3339 time")))?
                        .with_timezone(&chrono::Utc);
                    if op == Op::Has {
                        return Err(bad(format!("{name} does not support :")));
                    }
                    let p = push(params, t);
                    Ok(format!("({col} {} {p})", op.sql()))
                }
                Kind::Date => {
                    let s = text_of(name, value)?;
                    let d = chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                        .map_err(|_| bad(format!("{name} compares with a date (YYYY-MM-DD)")))?;
                    if op == Op::Has {
                        return Err(bad(format!("{name} does not support :")));
                    }
                    let p = push(params, d);
                    if op == Op::Ne {
                        return Ok(format!("({col} IS DISTINCT FROM {p})"));
                    }
                    Ok(format!("({col} {} {p})", op.sql()))
                }
                Kind::Integer => {
                    let n = match value {
                        Lit::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => *n as i64,
                        _ => return Err(bad(format!("{name} compares with a whole number"))),
                    };
                    if op == Op::Has {
                        return Err(bad(format!("{name} does not support :")));
                    }
                    let p = push(params, n);
                    if op == Op::Ne {
                        return Ok(format!("({col} IS DISTINCT FROM {p})"));
                    }
                    Ok(format!("({col} {} {p})", op.sql()))
                }
            }
        }
        Target::Custom(d) => {
            let key = d.key.as_str();
            // Keys are validated identifiers (letters, digits, underscores), safe to inline.
            let json = format!("t.custom -> '{key}'");
            let text = format!("t.custom ->> '{key}'");
            match d.field_type {
                FieldType::Text | FieldType::Select | FieldType::Date => {
                    let s = text_of(name, value)?;
                    match op {
                        Op::Eq => {
                            let p = push(params, serde_json::json!({ key: s }));
                            Ok(format!("(t.custom @> {p})"))
                        }
                        Op::Ne => {
                            let p = push(params, s);
                            Ok(format!("({text} IS DISTINCT FROM {p})"))
                        }
                        Op::Has => {
                            let p = push(params, like_pattern(&s));
                            Ok(format!("({text} ILIKE {p})"))
                        }
                        _ => {
                            let p = push(params, s);
                            Ok(format!("({text} {} {p})", op.sql()))
                        }
                    }
                }
                FieldType::Number => {
                    let Lit::Num(n) = value else {
                        return Err(bad(format!("{name} compares with a number")));
                    };
                    match op {
                        Op::Has => Err(bad(format!("{name} does not support :"))),
                        Op::Ne => {
                            let p = push(params, *n);
                            Ok(format!(
                                "((jsonb_typeof({json}) = 'number' AND ({text})::float8 <> {p}) OR {json} IS NULL)"
                            ))
                        }
                        _ => {
                            let p = push(params, *n);
                            Ok(format!(
                                "(jsonb_typeof({json}) = 'number' AND ({text})::float8 {} {p})",
                                op.sql()
                            ))
                        }
                    }
                }
                FieldType::Boolean => {
                    let Lit::Bool(b) = value else {
                        return Err(bad(format!("{name} compares with true or false")));
                    };
                    match op {
                        Op::Eq | Op::Has => {
                            let p = push(params, serde_json::json!({ key: b }));
                            Ok(format!("(t.custom @> {p})"))
                        }
                        Op::Ne => {
                            let p = push(params, serde_json::json!({ key: b }));
                            Ok(format!("(NOT t.custom @> {p})"))
                        }
                        _ => Err(bad(format!("{name} compares only by = or !="))),
                    }
                }
                FieldType::Multiselect => {
                    let s = text_of(name, value)?;
                    match op {
                        Op::Has | Op::Eq => {
                            let p = push(params, serde_json::json!({ key: [s] }));
                            Ok(format!("(t.custom @> {p})"))
                        }
                        Op::Ne => {
                            let p = push(params, serde_json::json!({ key: [s] }));
                            Ok(format!("(NOT t.custom @> {p})"))
                        }
                        _ => Err(bad(format!("{name} compares only by :, = or !="))),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field {
            name: "last_name",
            rest: "lastName",
            column: "last_name",
            kind: Kind::Text,
        },
        Field {
            name: "email",
            rest: "email",
            column: "email",
            kind: Kind::Text,
        },
        Field {
            name: "owner_user_id",
            rest: "ownerUserId",
            column: "owner_user_id",
            kind: Kind::Uuid,
        },
        Field {
            name: "create_time",
            rest: "createdAt",
            column: "created_at",
            kind: Kind::Time,
        },
        Field {
            name: "close_date",
            rest: "closeDate",
            column: "close_date",
            kind: Kind::Date,
        },
        Field {
            name: "amount_cents",
            rest: "amountCents",
            column: "amount_cents",
            kind: Kind::Integer,
        },
    ];

    fn compile_str(s: &str, hidden: &(dyn Fn(&str) -> bool + Sync)) -> ApiResult<(String, usize)> {
        let defs = vec![Definition {
            key: "score".into(),
            field_type: FieldType::Number,
            options: vec![],
            required: false,
        }];
        let schema = Schema {
            fields: FIELDS,
            custom: &defs,
            hidden,
            custom_index: None,
        };
        let e = parse(s)?.expect("non-empty");
        let mut params = vec![];
        let sql = compile(&e, &schema, &mut params)?;
        Ok((sql, params.len()))
    }

    #[test]
    fn parses_precedence_and_negation() {
        let e = parse(r#"last_name = "Ng" OR email:"x" AND NOT custom.score > 3"#)
            .unwrap()
            .unwrap();
        assert!(
            matches!(e, Expr::Or(_, _)),
            "AND binds tighter than OR: {e:?}"
        );
        let e = parse(r#"-(last_name = "a") last_name != 'b'"#)
            .unwrap()
            .unwrap();
        assert!(matches!(e, Expr::And(_, _)), "juxtaposition is AND: {e:?}");
        assert_eq!(parse("  ").unwrap(), None);
    }

    #[test]
    fn compiles_with_bound_parameters() {
        let none = |_: &str| false;
        let (sql, n) = compile_str(
            r#"last_name = "O'Brien" AND create_time >= "2026-01-01T00:00:00Z" AND custom.score > 2.5"#,
            &none,
        )
        .unwrap();
        assert_eq!(n, 3);
        assert!(!sql.contains("O'Brien"), "values are parameters: {sql}");
        assert!(sql.contains("t.created_at >= $2"), "{sql}");
        let (sql, n) = compile_str(
            r#"close_date < "2027-01-01" AND amount_cents >= 100000 AND amount_cents != 5"#,
            &none,
        )
        .unwrap();
        assert_eq!(n, 3);
        assert!(sql.contains("t.close_date < $1"), "{sql}");
        assert!(sql.contains("t.amount_cents IS DISTINCT FROM $3"), "{sql}");
    }

    #[test]
    fn narrows_custom_comparisons_through_the_index_when_there_is_one() {
        let defs = vec![Definition {
            key: "score".into(),
            field_type: FieldType::Number,
            options: vec![],
            required: false,
        }];
        let none = |_: &str| false;
        let schema = Schema {
            fields: FIELDS,
            custom: &defs,
            hidden: &none,
            custom_index: Some(CustomIndex {
                table: "x.values",
                object_type: "thing",
                value_fn: "x.value_of",
            }),
        };
        let compiled = |s: &str| {
            let mut params = vec![];
            let sql = compile(&parse(s).unwrap().unwrap(), &schema, &mut params).unwrap();
            (sql, params.len())
        };
        let (sql, n) = compiled("custom.score > 2.5");
        assert_eq!(n, 2, "the bound and the index's value: {sql}");
        assert!(
            sql.contains("EXISTS (SELECT 1 FROM x.values c")
                && sql.contains("c.object_type = 'thing' AND c.key = 'score'")
                && sql.contains("c.v >= x.value_of($2) AND c.v < 'o'"),
            "{sql}"
        );
        assert!(
            sql.contains("::float8 > $1"),
            "still checked as written: {sql}"
        );
        let (sql, _) = compiled("custom.score <= 7");
        assert!(
            sql.contains("c.v <= x.value_of($2) AND c.v >= 'n'"),
            "{sql}"
        );
        for broad in ["custom.score != 3", "custom.score = null"] {
            let (sql, n) = compiled(broad);
            assert!(!sql.contains("EXISTS"), "{broad}: {sql}");
            assert!(n <= 1);
        }
    }

    #[test]
    fn refuses_what_it_cannot_compile() {
        let none = |_: &str| false;
        for bad in [
            "last_name",
            "last_name = ",
            "(last_name = \"a\"",
            "nope = \"a\"",
            "custom.nope = 1",
            "owner_user_id = \"not-a-uuid\"",
            "owner_user_id > \"0190c0de-0000-7000-8000-000000000000\"",
            "create_time > \"yesterday\"",
            "custom.score = \"high\"",
            "last_name = 3",
            "last_name = \"unterminated",
            "last_name ~ \"a\"",
            "close_date > \"yesterday\"",
            "close_date : \"2027-01-01\"",
            "amount_cents = 1.5",
            "amount_cents = \"100\"",
            "amount_cents : 3",
        ] {
            let e = compile_str(bad, &none).unwrap_err();
            assert_eq!(e.fields[0].field, "filter", "{bad}");
        }
        let hidden = |f: &str| f == "email";
        let e = compile_str("email = \"a@b.c\"", &hidden).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::PermissionDenied);
        assert_eq!(e.fields[0].field, "filter");
        assert!(parse(&"a = 1 AND ".repeat(60)).is_err());
        assert!(parse(&format!("{}a = 1{}", "(".repeat(40), ")".repeat(40))).is_err());
    }
}
