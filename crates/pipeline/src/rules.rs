//! Stage transition rules, as pure functions over a pipeline's definition and a record.
//!
//! A move breaks at most one rule, checked in this order; each has a stable name that
//! answers carry (`rule`):
//! - `retired_stage`: the target stage is retired (records already in it stay valid);
//! - `allowed_transitions`: the pipeline lists where the current stage may go, and the
//!   target is not among them;
//! - `manager_required`: leaving a won or lost stage of a deal pipeline needs a manager,
//!   meaning a caller whose `opportunity.update` grant has scope `all` (admin and
//!   sales_manager have it);
//! - `required_fields`: the target stage's `requiredFields` are missing from the record;
//!   on deal pipelines a won stage always needs `amountCents` and `closeDate`, a lost stage
//!   `lostReason`.
//!
//! An unknown target stage is not a rule but bad input (the caller named nothing).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a stage means for the records in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl StageKind {
    /// Parses "open", "won" or "lost".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "won" => Some(Self::Won),
            "lost" => Some(Self::Lost),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    /// Won or lost.
    pub fn is_closed(self) -> bool {
        self != Self::Open
    }
}

/// One stage of a pipeline as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDef {
    pub key: String,
    pub name: String,
    pub probability: i32,
    pub kind: StageKind,
    #[serde(default)]
    pub required_fields: Vec<String>,
    #[serde(default)]
    pub retired: bool,
}

/// The object type of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    Deal,
    Ticket,
}

impl ObjectType {
    /// Parses "deal" or "ticket".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deal" => Some(Self::Deal),
            "ticket" => Some(Self::Ticket),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deal => "deal",
            Self::Ticket => "ticket",
        }
    }
}

/// What the rules need of a pipeline.
#[derive(Clone, Debug)]
pub struct PipelineDef {
    pub object_type: ObjectType,
    pub stages: Vec<StageDef>,
    /// From a stage key to the keys it may move to; a stage without an entry may move anywhere.
    pub allowed_transitions: BTreeMap<String, Vec<String>>,
}

impl PipelineDef {
    /// A stage by key.
    pub fn stage(&self, key: &str) -> Option<&StageDef> {
        self.stages.iter().find(|s| s.key == key)
    }

    /// Where new records start: the first open stage that is not retired.
    pub fn first_open(&self) -> Option<&StageDef> {
        self.stages
            .iter()
            .find(|s| s.kind == StageKind::Open && !s.retired)
    }
}

/// A broken rule: its stable name and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub rule: &'static str,
    pub message: String,
}

/// Why a move cannot happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveError {
    /// The target names no stage of the pipeline (bad input).
    UnknownStage,
    /// A transition rule refuses it.
    Rule(Broken),
}

/// A requested move.
pub struct Move<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// Whether the caller counts as a manager.
    pub manager: bool,
    /// Whether the record (with the move's own values applied) has a field (REST name).
    pub has: &'a dyn Fn(&str) -> bool,
}

/// The fields a stage requires, its own list plus what its kind implies on deal pipelines.
pub fn required_fields(p: &PipelineDef, stage: &StageDef) -> Vec<String> {
    let mut out = stage.required_fields.clone();
    if p.object_type == ObjectType::Deal {
        let implied: &[&str] = match stage.kind {
            StageKind::Won => &["amountCents", "closeDate"],
            StageKind::Lost => &["lostReason"],
            StageKind::Open => &[],
        };
        for f in implied {
            if !out.iter().any(|x| x == f) {
                out.push((*f).to_owned());
            }
        }
    }
    out
}

/// Checks a move; `Ok(false)` when it moves nowhere (already in the target stage).
pub fn check(p: &PipelineDef, m: &Move<'_>) -> Result<bool, MoveError> {
    let to = p.stage(m.to).ok_or(MoveError::UnknownStage)?;
    if m.from == m.to {
        return Ok(false);
    }
    if to.retired {
        return Err(MoveError::Rule(Broken {
            rule: "retired_stage",
            message: format!("stage {:?} is retired: nothing moves into it", to.key),
        }));
    }
    if let Some(allowed) = p.allowed_transitions.get(m.from)
        && !allowed.iter().any(|k| k == m.to)
    {
        return Err(MoveError::Rule(Broken {
            rule: "allowed_transitions",
            message: format!(
                "this pipeline does not allow moves from {:?} to {:?}",
                m.from, m.to
            ),
        }));
    }
    if p.object_type == ObjectType::Deal
        && p.stage(m.from).is_some_and(|s| s.kind.is_closed())
        && !m.manager
    {
        return Err(MoveError::Rule(Broken {
            rule: "manager_required",
            message: format!(
                "leaving the closed stage {:?} needs a manager (opportunity.update with scope all)",
                m.from
            ),
        }));
    }
    let missing: Vec<String> = required_fields(p, to)
        .into_iter()
        .filter(|f| !(m.has)(f))
        .collect();
    if !missing.is_empty() {
        return Err(MoveError::Rule(Broken {
            rule: "required_fields",
            message: format!("stage {:?} requires {}", to.key, missing.join(", ")),
        }));
    }
    Ok(true)
}

/// The default stages of a new tenant's pipelines.
pub fn default_stages(t: ObjectType) -> Vec<StageDef> {
    let s = |key: &str, name: &str, probability: i32, kind: StageKind| StageDef {
        key: key.into(),
        name: name.into(),
        probability,
        kind,
        required_fields: vec![],
        retired: false,
    };
    match t {
        ObjectType::Deal => vec![
            s("prospecting", "Prospecting", 10, StageKind::Open),
            s("qualification", "Qualification", 25, StageKind::Open),
            s("proposal", "Proposal", 50, StageKind::Open),
            s("negotiation", "Negotiation", 75, StageKind::Open),
            s("closed_won", "Closed won", 100, StageKind::Won),
            s("closed_lost", "Closed lost", 0, StageKind::Lost),
        ],
        ObjectType::Ticket => vec![
            s("new", "New", 0, StageKind::Open),
            s("in_progress", "In progress", 0, StageKind::Open),
            s("waiting", "Waiting on customer", 0, StageKind::Open),
            s("resolved", "Resolved", 100, StageKind::Won),
            s("closed", "Closed", 100, StageKind::Lost),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deal() -> PipelineDef {
        PipelineDef {
            object_type: ObjectType::Deal,
            stages: default_stages(ObjectType::Deal),
            allowed_transitions: BTreeMap::new(),
        }
    }

    fn mv<'a>(
        from: &'a str,
        to: &'a str,
        manager: bool,
        has: &'a dyn Fn(&str) -> bool,
    ) -> Move<'a> {
        Move {
            from,
            to,
            manager,
            has,
        }
    }

    fn rule(r: Result<bool, MoveError>) -> &'static str {
        match r {
            Err(MoveError::Rule(b)) => b.rule,
            other => panic!("expected a broken rule, got {other:?}"),
        }
    }

    const ALL: &dyn Fn(&str) -> bool = &|_| true;
    const NONE: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn open_stages_move_freely() {
        assert_eq!(
            check(&deal(), &mv("prospecting", "proposal", false, NONE)),
            Ok(true)
        );
        assert_eq!(
            check(&deal(), &mv("proposal", "prospecting", false, NONE)),
            Ok(true)
        );
    }

    #[test]
    fn unknown_stage_is_bad_input() {
        assert_eq!(
            check(&deal(), &mv("prospecting", "nowhere", true, ALL)),
            Err(MoveError::UnknownStage)
        );
    }

    #[test]
    fn same_stage_moves_nowhere() {
        assert_eq!(
            check(&deal(), &mv("proposal", "proposal", false, NONE)),
            Ok(false)
        );
    }

    #[test]
    fn won_needs_amount_and_close_date() {
        let r = check(
            &deal(),
            &mv("proposal", "closed_won", false, &|f| f == "amountCents"),
        );
        let Err(MoveError::Rule(b)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(b.rule, "required_fields");
        assert!(b.message.contains("closeDate"), "{}", b.message);
        assert!(!b.message.contains("amountCents"), "{}", b.message);
        assert_eq!(
            check(&deal(), &mv("proposal", "closed_won", false, ALL)),
            Ok(true)
        );
    }

    #[test]
    fn lost_needs_a_reason() {
        assert_eq!(
            rule(check(&deal(), &mv("proposal", "closed_lost", false, NONE))),
            "required_fields"
        );
        assert_eq!(
            check(
                &deal(),
                &mv("proposal", "closed_lost", false, &|f| f == "lostReason")
            ),
            Ok(true)
        );
    }

    #[test]
    fn stage_required_fields_are_checked() {
        let mut p = deal();
        p.stages[2].required_fields = vec!["closeDate".into()];
        assert_eq!(
            rule(check(&p, &mv("prospecting", "proposal", false, NONE))),
            "required_fields"
        );
        assert_eq!(
            check(&p, &mv("prospecting", "proposal", false, ALL)),
            Ok(true)
        );
    }

    #[test]
    fn leaving_won_or_lost_needs_a_manager() {
        assert_eq!(
            rule(check(&deal(), &mv("closed_won", "proposal", false, ALL))),
            "manager_required"
        );
        assert_eq!(
            rule(check(&deal(), &mv("closed_lost", "closed_won", false, ALL))),
            "manager_required"
        );
        assert_eq!(
            check(&deal(), &mv("closed_won", "proposal", true, ALL)),
            Ok(true)
        );
    }

    #[test]
    fn tickets_reopen_without_a_manager_or_reason() {
        let p = PipelineDef {
            object_type: ObjectType::Ticket,
            stages: default_stages(ObjectType::Ticket),
            allowed_transitions: BTreeMap::new(),
        };
        assert_eq!(check(&p, &mv("new", "closed", false, NONE)), Ok(true));
        assert_eq!(
            check(&p, &mv("resolved", "in_progress", false, NONE)),
            Ok(true)
        );
    }

    #[test]
    fn retired_stages_take_nothing_new() {
        let mut p = deal();
        p.stages[1].retired = true;
        assert_eq!(
            rule(check(&p, &mv("prospecting", "qualification", true, ALL))),
            "retired_stage"
        );
        // Records already in it may leave.
        assert_eq!(
            check(&p, &mv("qualification", "proposal", false, ALL)),
            Ok(true)
        );
        assert_eq!(p.first_open().map(|s| s.key.as_str()), Some("prospecting"));
    }

    #[test]
    fn allowed_transitions_restrict_listed_stages_only() {
        let mut p = deal();
        p.allowed_transitions
            .insert("prospecting".into(), vec!["qualification".into()]);
        assert_eq!(
            rule(check(&p, &mv("prospecting", "proposal", false, ALL))),
            "allowed_transitions"
        );
        assert_eq!(
            check(&p, &mv("prospecting", "qualification", false, ALL)),
            Ok(true)
        );
        assert_eq!(
            check(&p, &mv("proposal", "prospecting", false, ALL)),
            Ok(true)
        );
    }

    #[test]
    fn rules_are_checked_in_order() {
        let mut p = deal();
        p.allowed_transitions
            .insert("closed_won".into(), vec!["negotiation".into()]);
        // Not allowed beats manager and required fields.
        assert_eq!(
            rule(check(&p, &mv("closed_won", "closed_lost", false, NONE))),
            "allowed_transitions"
        );
        // Manager beats required fields.
        assert_eq!(
            rule(check(
                &deal(),
                &mv("closed_won", "closed_lost", false, NONE)
            )),
            "manager_required"
        );
    }
}
