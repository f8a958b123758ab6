//! A tenant's rules, compiled, and their evaluation against one event: which rules apply (status,
//! trigger, dates, schedule, campaign and target, condition, stacking), what they award (with the
//! caps and budgets the store enforces in its transaction, and what each award was computed on),
//! and, for simulations, why each rule matched or not.

use super::compile::{Compiled, Fun};
use super::define::*;
use super::schedule::{Local, Window, age, is_birthday};
use super::value::*;
use super::{ast, compile, parser, printer};
use crate::earn::{
    Award, AwardBasis, AwardLimit, AwardTerms, BasisLine, EarnContext, EarnScope, Earner,
    MemberFacts, Trigger,
};
use crate::event::{Custom, Purchase};
use crate::program::{ProgramSettings, RATE_SCALE, Rounding};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;

/// The event a rule set is evaluated against.
#[derive(Debug, Clone, Copy)]
pub enum RuleEvent<'a> {
    Purchase(&'a Purchase),
    Custom(&'a Custom),
    Refund {
        order_id: &'a str,
        amount_minor: i64,
        at: DateTime<Utc>,
    },
    Enrolment {
        at: DateTime<Utc>,
    },
    Birthday {
        at: DateTime<Utc>,
    },
}

impl RuleEvent<'_> {
    pub fn trigger(&self) -> TriggerKind {
        match self {
            RuleEvent::Purchase(_) => TriggerKind::Purchase,
            RuleEvent::Custom(_) => TriggerKind::Custom,
            RuleEvent::Refund { .. } => TriggerKind::Refund,
            RuleEvent::Enrolment { .. } => TriggerKind::Enrolment,
            RuleEvent::Birthday { .. } => TriggerKind::Birthday,
        }
    }
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            RuleEvent::Purchase(p) => p.occurred_at,
            RuleEvent::Custom(c) => c.occurred_at,
            RuleEvent::Refund { at, .. }
            | RuleEvent::Enrolment { at }
            | RuleEvent::Birthday { at } => *at,
        }
    }
}

/// One evaluation's inputs.
pub struct Input<'a> {
    pub program: &'a ProgramSettings,
    pub event: RuleEvent<'a>,
    pub member: &'a MemberFacts,
    /// Evaluate rules and campaigns whatever their status (simulating drafts, backtests).
    pub any_status: bool,
    /// Ignore rules' validity windows and campaigns' dates (backtests over past periods).
    pub ignore_dates: bool,
}

/// Why a rule matched or not, for simulations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    pub rule_id: String,
    pub version: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    pub matched: bool,
    pub reason: String,
    /// Points its effects give before per-member caps and budgets (the per-order cap applied).
    pub points: i64,
    /// The caps and budgets the store would check: "per member per month (2000)".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
}

/// An effect for a later capability (issue a reward, award a badge, ...), fired by a rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiredEffect {
    pub rule_id: String,
    pub rule_version: i64,
    pub kind: String,
    pub params: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub awards: Vec<Award>,
    pub effects: Vec<FiredEffect>,
    /// One per rule of the set, when explaining.
    pub traces: Vec<RuleTrace>,
    /// Rule conditions evaluated (for the benchmark).
    pub conditions_evaluated: usize,
}

/// The seam for effects that later capabilities add. A handler names its `kind` and checks
/// the `params` of an `extension` effect when a rule is saved; rules naming a kind without a
/// handler are refused. The application runs fired effects after the event's write.
pub trait EffectHandler: Send + Sync {
    fn kind(&self) -> &'static str;
    fn check(&self, params: &serde_json::Value) -> Result<(), String>;
}

/// The registered effect handlers.
#[derive(Clone, Default)]
pub struct Extensions(pub Vec<Arc<dyn EffectHandler>>);

impl Extensions {
    fn check(&self, field: &str, kind: &str, params: &serde_json::Value) -> Result<(), DefError> {
        match self.0.iter().find(|h| h.kind() == kind) {
            Some(h) => h
                .check(params)
                .map_err(|e| DefError::new(format!("{field}.params"), e)),
            None => Err(DefError::new(
                format!("{field}.kind"),
                format!(
                    "no handler for effects of kind `{kind}` is installed; the effects available are points, per_amount, multiplier and nth_order"
                ),
            )),
        }
    }
}

enum Effect {
    Points(i64),
    PerAmount {
        rate_micro: i64,
        lines: Option<Compiled>,
    },
    Multiplier {
        factor_micro: i64,
        lines: Option<Compiled>,
    },
    NthOrder {
        n: i64,
        points: i64,
        every: bool,
    },
    Extension {
        kind: String,
        params: serde_json::Value,
    },
}

/// An effect and the description its awards carry (made once, when the rule is compiled).
struct Described {
    effect: Effect,
    description: String,
}

fn describe(rule: &str, e: &EffectDef) -> String {
    let what = match e {
        EffectDef::Points { points } => format!("{points} points"),
        EffectDef::PerAmount { rate, lines: None } => format!("{rate} points per currency unit"),
        EffectDef::PerAmount {
            rate,
            lines: Some(l),
        } => format!("{rate} points per currency unit of the lines where {l}"),
        EffectDef::Multiplier {
            factor,
            lines: None,
        } => format!("×{factor} base points"),
        EffectDef::Multiplier {
            factor,
            lines: Some(l),
        } => format!("×{factor} base points on the lines where {l}"),
        EffectDef::NthOrder {
            n,
            points,
            every: false,
        } => format!("{points} points on order number {n}"),
        EffectDef::NthOrder {
            n,
            points,
            every: true,
        } => format!("{points} points on every {n}th order"),
        EffectDef::Extension { kind, .. } => kind.clone(),
    };
    format!("{rule}: {what}")
}

enum Target {
    All,
    Expr(Compiled),
    List(HashSet<String>),
}

pub struct CompiledCampaign {
    pub id: String,
    pub version: i64,
    pub name: String,
    pub status: Status,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    budget: Option<i64>,
    caps: CapsDef,
    target: Target,
    counter: Arc<str>,
}

impl CompiledCampaign {
    /// Compiles a campaign; `list` is its uploaded target list (member ids).
    pub fn compile(
        rec: &CampaignRecord,
        list: HashSet<String>,
    ) -> Result<CompiledCampaign, DefError> {
        let d = &rec.definition;
        check_campaign(d)?;
        let target = match &d.target {
            TargetDef::All => Target::All,
            TargetDef::List => Target::List(list),
            TargetDef::Expression { expression } => Target::Expr(
                super::compile_condition(expression)
                    .map_err(|e| DefError::new("target.expression", e.to_string()))?,
            ),
        };
        Ok(CompiledCampaign {
            id: rec.id.clone(),
            version: rec.version,
            name: d.name.clone(),
            status: rec.status,
            starts_at: instant("starts_at", &d.starts_at)?,
            ends_at: instant("ends_at", &d.ends_at)?,
            budget: d.budget_points,
            caps: d.caps.clone(),
            target,
            counter: Arc::from(format!("campaign:{}", rec.id)),
        })
    }
}

/// Checks a campaign definition, its target expression included.
pub fn check_campaign(d: &CampaignDef) -> Result<(), DefError> {
    d.check_fields()?;
    if let TargetDef::Expression { expression } = &d.target {
        super::compile_condition(expression)
            .map_err(|e| DefError::new("target.expression", e.to_string()))?;
    }
    Ok(())
}

pub struct CompiledRule {
    pub id: String,
    pub version: i64,
    pub name: String,
    pub status: Status,
    pub trigger: TriggerKind,
    event_type: Option<String>,
    condition: Compiled,
    /// The conjuncts of a top-level `a && b && ...`, to say which one was false.
    conjuncts: Vec<(String, Fun)>,
    effects: Vec<Described>,
    pub priority: i64,
    valid_from: Option<DateTime<Utc>>,
    valid_to: Option<DateTime<Utc>>,
    windows: Vec<Window>,
    stacking: Stacking,
    caps: CapsDef,
    campaign: Option<Arc<CompiledCampaign>>,
    counter: Arc<str>,
    /// Whether any cap or budget applies (its own or its campaign's).
    limited: bool,
    /// Whether its outcome may depend on the member (see [`reads_member`]).
    reads_member: bool,
}

/// Whether a rule's outcome may depend on who the member is, told from its definition, so an
/// event with no such rule is earned on without reading the member first. On the safe side:
/// any mention of `member` in the condition or an effect's expressions (the only way an
/// expression reaches the member: the name cannot be bound to anything else), a member's nth
/// order, an effect of an installed extension (its handler may look), and a campaign aimed at
/// a list or an expression.
fn reads_member(d: &RuleDef, campaign: Option<&CompiledCampaign>) -> bool {
    let mentions = |text: &str| text.contains("member");
    mentions(&d.condition)
        || d.effects.iter().any(|e| match e {
            EffectDef::Points { .. } => false,
            EffectDef::PerAmount { rate: x, lines }
            | EffectDef::Multiplier { factor: x, lines } => {
                mentions(x) || lines.as_deref().is_some_and(mentions)
            }
            EffectDef::NthOrder { .. } | EffectDef::Extension { .. } => true,
        })
        || campaign.is_some_and(|c| !matches!(c.target, Target::All))
}

fn conjuncts<'e>(e: &'e ast::Expr, out: &mut Vec<&'e ast::Expr>) {
    match &e.kind {
        ast::ExprKind::Binary(ast::BinOp::And, l, r) => {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        _ => out.push(e),
    }
}

impl CompiledRule {
    /// Checks and compiles one version of a rule. `campaign` is its campaign when it has one.
    pub fn compile(
        rec: &RuleRecord,
        campaign: Option<Arc<CompiledCampaign>>,
        ext: &Extensions,
    ) -> Result<CompiledRule, DefError> {
        let d = &rec.definition;
        check_text("name", &d.name, MAX_NAME_CHARS)?;
        if let Some(desc) = &d.description {
            check_text("description", desc, MAX_DESCRIPTION_CHARS)?;
        }
        match (d.trigger, &d.event_type) {
            (TriggerKind::Custom, None) => {
                return Err(DefError::new(
                    "event_type",
                    "a `custom` rule names the event type it listens to (e.g. review_written)",
                ));
            }
            (TriggerKind::Custom, Some(t)) => {
                let ok = !t.is_empty()
                    && t.len() <= 64
                    && t.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)
                    });
                if !ok {
                    return Err(DefError::new(
                        "event_type",
                        "must be 1 to 64 characters of a-z, 0-9, `_`, `.` or `-`",
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(DefError::new(
                    "event_type",
                    "only `custom` rules name an event type",
                ));
            }
            (_, None) => {}
        }
        let ast =
            parser::parse(&d.condition).map_err(|e| DefError::new("condition", e.to_string()))?;
        let condition = compile::compile(&ast, &compile::Env::condition())
            .map_err(|e| DefError::new("condition", e.to_string()))?;
        if !matches!(
            condition.ty,
            super::schema::Type::Bool | super::schema::Type::Dyn
        ) {
            return Err(DefError::new(
                "condition",
                format!(
                    "line {}, column {}: the condition must be true or false, but it is a {}",
                    ast.at.line, ast.at.column, condition.ty
                ),
            ));
        }
        let mut parts = Vec::new();
        conjuncts(&ast, &mut parts);
        let mut conj = Vec::new();
        if parts.len() > 1 {
            for p in parts {
                let c = compile::compile(p, &compile::Env::condition())
                    .map_err(|e| DefError::new("condition", e.to_string()))?;
                conj.push((printer::print(p), c.fun));
            }
        }
        if d.effects.is_empty() || d.effects.len() > MAX_EFFECTS {
            return Err(DefError::new(
                "effects",
                format!("a rule has 1 to {MAX_EFFECTS} effects"),
            ));
        }
        let mut effects = Vec::with_capacity(d.effects.len());
        for (i, e) in d.effects.iter().enumerate() {
            effects.push(Described {
                effect: effect(&format!("effects[{i}]"), e, d.trigger, ext)?,
                description: describe(&d.name, e),
            });
        }
        let valid_from = instant("valid_from", &d.valid_from)?;
        let valid_to = instant("valid_to", &d.valid_to)?;
        if let (Some(a), Some(b)) = (valid_from, valid_to)
            && b <= a
        {
            return Err(DefError::new("valid_to", "must be after valid_from"));
        }
        if d.schedule.len() > MAX_WINDOWS {
            return Err(DefError::new(
                "schedule",
                format!("at most {MAX_WINDOWS} windows"),
            ));
        }
        let windows = d
            .schedule
            .iter()
            .enumerate()
            .map(|(i, w)| w.check(&format!("schedule[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        d.caps.check("caps.")?;
        if let (Some(c), Some(id)) = (&campaign, &d.campaign_id)
            && &c.id != id
        {
            return Err(DefError::new(
                "campaign_id",
                "does not match the campaign given",
            ));
        }
        Ok(CompiledRule {
            id: rec.id.clone(),
            version: rec.version,
            name: d.name.clone(),
            status: rec.status,
            trigger: d.trigger,
            event_type: d.event_type.clone(),
            condition,
            conjuncts: conj,
            effects,
            priority: d.priority,
            valid_from,
            valid_to,
            windows,
            stacking: d.stacking,
            caps: d.caps.clone(),
            limited: !d.caps.is_empty()
                || campaign
                    .as_ref()
                    .is_some_and(|c| c.budget.is_some() || !c.caps.is_empty()),
            reads_member: reads_member(d, campaign.as_deref()),
            campaign,
            counter: Arc::from(format!("rule:{}", rec.id)),
        })
    }

    pub fn campaign_id(&self) -> Option<&str> {
        self.campaign.as_deref().map(|c| c.id.as_str())
    }
}

fn effect(
    field: &str,
    e: &EffectDef,
    trigger: TriggerKind,
    ext: &Extensions,
) -> Result<Effect, DefError> {
    let purchase_only = |name: &str| -> Result<(), DefError> {
        if trigger != TriggerKind::Purchase {
            return Err(DefError::new(
                format!("{field}.type"),
                format!(
                    "`{name}` applies to purchases only; use `points` for {} rules",
                    trigger.as_str()
                ),
            ));
        }
        Ok(())
    };
    let filter = |lines: &Option<String>| -> Result<Option<Compiled>, DefError> {
        lines
            .as_deref()
            .map(|src| {
                super::compile_line_filter(src)
                    .map_err(|e| DefError::new(format!("{field}.lines"), e.to_string()))
            })
            .transpose()
    };
    Ok(match e {
        EffectDef::Points { points } => {
            check_points(&format!("{field}.points"), *points, MAX_POINTS)?;
            Effect::Points(*points)
        }
        EffectDef::PerAmount { rate, lines } => {
            purchase_only("per_amount")?;
            Effect::PerAmount {
                rate_micro: micro(&format!("{field}.rate"), rate, MAX_RATE)?,
                lines: filter(lines)?,
            }
        }
        EffectDef::Multiplier { factor, lines } => {
            purchase_only("multiplier")?;
            let factor_micro = micro(&format!("{field}.factor"), factor, MAX_FACTOR)?;
            if factor_micro <= RATE_SCALE {
                return Err(DefError::new(
                    format!("{field}.factor"),
                    "must be above 1 (2 doubles the base points)",
                ));
            }
            Effect::Multiplier {
                factor_micro,
                lines: filter(lines)?,
            }
        }
        EffectDef::NthOrder { n, points, every } => {
            purchase_only("nth_order")?;
            check_points(&format!("{field}.n"), *n, MAX_NTH_ORDER)?;
            check_points(&format!("{field}.points"), *points, MAX_POINTS)?;
            Effect::NthOrder {
                n: *n,
                points: *points,
                every: *every,
            }
        }
        EffectDef::Extension { kind, params } => {
            ext.check(field, kind, params)?;
            Effect::Extension {
                kind: kind.clone(),
                params: params.clone(),
            }
        }
    })
}

/// A tenant's rules, sorted by priority then id.
#[derive(Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    /// The limits of awards without caps, shared rather than made per award.
    no_limits: Option<Arc<[AwardLimit]>>,
    /// The tenant's rules version this set was built from.
    pub version: i64,
}

impl RuleSet {
    pub fn new(mut rules: Vec<CompiledRule>, version: i64) -> RuleSet {
        rules.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        RuleSet {
            rules,
            version,
            no_limits: Some(Arc::from(Vec::new())),
        }
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule listens to `trigger` (so callers can skip building an evaluation).
    pub fn listens_to(&self, trigger: TriggerKind) -> bool {
        self.rules.iter().any(|r| r.trigger == trigger)
    }

    /// Evaluates every rule's condition (only the condition) `rounds` times against the event,
    /// with the views built once; returns how many evaluations were true. For benchmarks.
    pub fn evaluate_conditions(&self, input: &Input<'_>, rounds: usize) -> usize {
        let tz = input.program.tz().unwrap_or(chrono_tz::UTC);
        let local = Local::of(input.event.at(), tz);
        let event = event_view(input, &local);
        let member = member_view(
            input.member,
            &local,
            tz,
            input.program.currency.minor_per_unit(),
        );
        let program = ProgramView {
            currency: input.program.currency.code(),
            points_name: &input.program.points_name,
            timezone: &input.program.timezone,
            earn_rate: 1.0,
        };
        let mut frame = Frame::new(&event, &member, &program);
        let mut hits = 0;
        for _ in 0..rounds {
            for rule in &self.rules {
                frame.steps = 0;
                if matches!((rule.condition.fun)(&mut frame).and_then(truthy), Ok(true)) {
                    hits += 1;
                }
            }
        }
        hits
    }

    /// Evaluates every rule against the event. With `explain`, `traces` says for each rule
    /// why it matched or not.
    pub fn evaluate(&self, input: &Input<'_>, explain: bool) -> Evaluation {
        let mut out = Evaluation::default();
        let trigger = input.event.trigger();
        if !explain && !self.listens_to(trigger) {
            return out;
        }
        let tz = input.program.tz().unwrap_or(chrono_tz::UTC);
        let local = Local::of(input.event.at(), tz);
        let event = event_view(input, &local);
        let member = member_view(
            input.member,
            &local,
            tz,
            input.program.currency.minor_per_unit(),
        );
        let program = ProgramView {
            currency: input.program.currency.code(),
            points_name: &input.program.points_name,
            timezone: &input.program.timezone,
            earn_rate: input.program.earn_rate_micro().unwrap_or(0) as f64 / RATE_SCALE as f64,
        };
        let mut frame = Frame::new(&event, &member, &program);
        let mut periods: Option<Periods> = None;
        let earn_rate_micro = input.program.earn_rate_micro().unwrap_or(0);
        out.awards.reserve(self.rules.len().min(16));
        let mut applied: Option<&str> = None;
        let mut stopped_by: Option<&str> = None;
        for rule in &self.rules {
            let mut trace = |matched: bool, reason: String, points: i64, limits: Vec<String>| {
                if explain {
                    out.traces.push(RuleTrace {
                        rule_id: rule.id.clone(),
                        version: rule.version,
                        name: rule.name.clone(),
                        campaign_id: rule.campaign_id().map(str::to_string),
                        matched,
                        reason,
                        points,
                        limits,
                    });
                }
            };
            if let Some(reason) = gate(rule, input, &local, &mut frame) {
                trace(false, reason, 0, vec![]);
                continue;
            }
            if let Some(by) = stopped_by {
                trace(
                    false,
                    format!("not evaluated: rule `{by}` before it stops evaluation"),
                    0,
                    vec![],
                );
                continue;
            }
            out.conditions_evaluated += 1;
            frame.steps = 0;
            match (rule.condition.fun)(&mut frame).and_then(truthy) {
                Ok(true) => {}
                Ok(false) => {
                    let why = if explain {
                        false_part(rule, &mut frame)
                    } else {
                        String::new()
                    };
                    trace(false, why, 0, vec![]);
                    continue;
                }
                Err(e) => {
                    trace(
                        false,
                        format!("the condition could not be evaluated: {e}"),
                        0,
                        vec![],
                    );
                    continue;
                }
            }
            if rule.stacking == Stacking::Exclusive
                && let Some(first) = applied
            {
                trace(
                    false,
                    format!("skipped: it is exclusive and rule `{first}` already applied"),
                    0,
                    vec![],
                );
                continue;
            }
            let before = out.awards.len();
            let no_limits = self
                .no_limits
                .clone()
                .unwrap_or_else(|| Arc::from(Vec::new()));
            let ctx = ApplyCtx {
                input,
                local: &local,
                earn_rate_micro,
                no_limits,
            };
            let (effects, note) = apply(rule, &ctx, &mut periods, &mut frame, &mut out.awards);
            let awards = &out.awards[before..];
            let points: i64 = awards.iter().map(|a| a.points).sum();
            let limits = awards
                .first()
                .and_then(|a| a.terms.as_ref())
                .map(|t| {
                    t.limits
                        .iter()
                        .map(|l| format!("{} ({})", l.label, l.max))
                        .collect()
                })
                .unwrap_or_default();
            let reason = match (&note, points, effects.is_empty()) {
                (Some(n), _, _) => format!("matched; {n}"),
                (None, 0, true) => "matched, but its effects give no points here".to_string(),
                _ => "matched".to_string(),
            };
            trace(true, reason, points, limits);
            out.effects.extend(effects);
            applied.get_or_insert(rule.id.as_str());
            if rule.stacking != Stacking::Stackable {
                stopped_by = Some(rule.id.as_str());
            }
        }
        out
    }
}

/// Why a rule does not apply before its condition is even looked at, if it does not.
fn gate(
    rule: &CompiledRule,
    input: &Input<'_>,
    local: &Local,
    frame: &mut Frame<'_>,
) -> Option<String> {
    let trigger = input.event.trigger();
    if rule.trigger != trigger {
        return Some(format!("listens to {} events", rule.trigger.as_str()));
    }
    if let (RuleEvent::Custom(c), Some(t)) = (&input.event, &rule.event_type)
        && &c.kind != t
    {
        return Some(format!("listens to custom events of type `{t}`"));
    }
    if !input.any_status && rule.status != Status::Active {
        return Some(format!("not active (status {})", rule.status.as_str()));
    }
    let at = input.event.at();
    if !input.ignore_dates
        && (rule.valid_from.is_some_and(|f| at < f) || rule.valid_to.is_some_and(|t| at >= t))
    {
        return Some("outside its validity dates".into());
    }
    if !rule.windows.is_empty() && !rule.windows.iter().any(|w| w.contains(local)) {
        let windows: Vec<String> = rule.windows.iter().map(Window::describe).collect();
        return Some(format!(
            "outside its schedule ({}); the event is on {} {:02}:{:02} local time",
            windows.join("; "),
            local.day_name(),
            local.hour,
            local.minute
        ));
    }
    if let Some(c) = &rule.campaign {
        if !input.any_status && c.status != Status::Active {
            return Some(format!(
                "its campaign `{}` is not active (status {})",
                c.name,
                c.status.as_str()
            ));
        }
        if !input.ignore_dates
            && (c.starts_at.is_some_and(|f| at < f) || c.ends_at.is_some_and(|t| at >= t))
        {
            return Some(format!("outside the dates of its campaign `{}`", c.name));
        }
        match &c.target {
            Target::All => {}
            Target::List(ids) => {
                if !input.member.id.as_ref().is_some_and(|id| ids.contains(id)) {
                    return Some(format!(
                        "the member is not in the list of campaign `{}`",
                        c.name
                    ));
                }
            }
            Target::Expr(t) => {
                frame.steps = 0;
                match (t.fun)(frame).and_then(truthy) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Some(format!(
                            "the member is not in the target of campaign `{}`",
                            c.name
                        ));
                    }
                    Err(e) => {
                        return Some(format!(
                            "the target of campaign `{}` could not be evaluated: {e}",
                            c.name
                        ));
                    }
                }
            }
        }
    }
    None
}

/// Names the first conjunct of a false condition that was false.
fn false_part(rule: &CompiledRule, frame: &mut Frame<'_>) -> String {
    for (src, fun) in &rule.conjuncts {
        frame.steps = 0;
        match fun(frame).and_then(truthy) {
            Ok(true) => {}
            Ok(false) => return format!("the condition is false: `{src}` is false"),
            Err(e) => {
                return format!("the condition is false: `{src}` could not be evaluated ({e})");
            }
        }
    }
    "the condition is false".into()
}

fn round_div(num: i128, denom: i128, rounding: Rounding) -> i64 {
    if denom <= 0 {
        return 0;
    }
    let v = match rounding {
        Rounding::Floor => num.div_euclid(denom),
        Rounding::Ceil => (num + denom - 1).div_euclid(denom),
        Rounding::Nearest => (num * 2 + denom).div_euclid(denom * 2),
    };
    i64::try_from(v.max(0)).unwrap_or(i64::MAX)
}

/// The lines a filter keeps (all of them without a filter): the amount paid for them, and
/// the basis by sku. A line whose filter fails to evaluate is not kept.
fn scope<'a>(
    filter: &Option<Compiled>,
    frame: &mut Frame<'a>,
    event: &'a EventView<'a>,
) -> (i64, Option<AwardBasis>) {
    let Some(filter) = filter else {
        return (event.total_minor, None);
    };
    let mut kept: Vec<(&str, i64, i64)> = Vec::new();
    for line in &event.lines {
        frame.locals[0] = Val::Line(line);
        frame.steps = 0;
        if matches!((filter.fun)(frame).and_then(truthy), Ok(true)) {
            match kept.iter_mut().find(|(sku, _, _)| *sku == line.sku) {
                Some(k) => {
                    k.1 += line.quantity;
                    k.2 += line.paid_minor;
                }
                None => kept.push((line.sku, line.quantity, line.paid_minor)),
            }
        }
    }
    frame.locals[0] = Val::Null;
    if kept.is_empty() {
        return (0, None);
    }
    let total_minor = kept.iter().map(|k| k.2).sum();
    let lines = kept
        .into_iter()
        .map(|(sku, quantity, paid_minor)| BasisLine {
            sku: sku.to_string(),
            quantity,
            paid_minor,
        })
        .collect();
    (total_minor, Some(AwardBasis { total_minor, lines }))
}

/// The counter keys of the event's local day, week and month (made once per event, when a
/// capped rule matches).
struct Periods {
    day: Arc<str>,
    week: Arc<str>,
    month: Arc<str>,
    life: Arc<str>,
    budget: Arc<str>,
}

impl Periods {
    fn of(local: &Local) -> Periods {
        Periods {
            day: Arc::from(local.day_key()),
            week: Arc::from(local.week_key()),
            month: Arc::from(local.month_key()),
            life: Arc::from("life"),
            budget: Arc::from("budget"),
        }
    }
}

fn limits(rule: &CompiledRule, p: &Periods) -> Arc<[AwardLimit]> {
    let mut out = Vec::new();
    let mut add = |counter: &Arc<str>, caps: &CapsDef, budget: Option<i64>, whose: bool| {
        for (max, per_member, period, label) in [
            (
                caps.per_member_day,
                true,
                &p.day,
                ["rule per member per day", "campaign per member per day"],
            ),
            (
                caps.per_member_week,
                true,
                &p.week,
                ["rule per member per week", "campaign per member per week"],
            ),
            (
                caps.per_member_month,
                true,
                &p.month,
                ["rule per member per month", "campaign per member per month"],
            ),
            (
                caps.per_member_lifetime,
                true,
                &p.life,
                ["rule per member in all", "campaign per member in all"],
            ),
            (budget, false, &p.budget, ["rule budget", "campaign budget"]),
        ] {
            if let Some(max) = max {
                out.push(AwardLimit {
                    counter: counter.clone(),
                    per_member,
                    period: period.clone(),
                    max,
                    label: label[usize::from(whose)],
                });
            }
        }
    };
    add(&rule.counter, &rule.caps, rule.caps.budget_points, false);
    if let Some(c) = &rule.campaign {
        add(&c.counter, &c.caps, c.budget, true);
    }
    Arc::from(out)
}

/// The awards and fired effects of a matching rule, the per-order cap applied, and a note.
/// What `apply` needs of the evaluation.
struct ApplyCtx<'i, 'a> {
    input: &'i Input<'a>,
    local: &'i Local,
    earn_rate_micro: i64,
    no_limits: Arc<[AwardLimit]>,
}

/// Base points of `amount_minor` at the programme's rate (the rate read once per event).
fn base_of(program: &ProgramSettings, rate_micro: i64, amount_minor: i64) -> i64 {
    let denom = i128::from(program.currency.minor_per_unit()) * i128::from(RATE_SCALE);
    round_div(
        i128::from(amount_minor) * i128::from(rate_micro),
        denom,
        program.rounding,
    )
}

fn apply(
    rule: &CompiledRule,
    ctx: &ApplyCtx<'_, '_>,
    periods: &mut Option<Periods>,
    frame: &mut Frame<'_>,
    awards: &mut Vec<Award>,
) -> (Vec<FiredEffect>, Option<String>) {
    let input = ctx.input;
    let program = input.program;
    let event = frame.event;
    let mut fired = Vec::new();
    let lims: Arc<[AwardLimit]> = if rule.limited {
        limits(rule, periods.get_or_insert_with(|| Periods::of(ctx.local)))
    } else {
        ctx.no_limits.clone()
    };
    let mut left = rule.caps.per_order.unwrap_or(i64::MAX);
    let mut note = None;
    for Described {
        effect,
        description,
    } in &rule.effects
    {
        let mut nth = None;
        let (points, basis) = match effect {
            Effect::Points(p) => (*p, None),
            Effect::PerAmount { rate_micro, lines } => {
                let (amount, basis) = scope(lines, frame, event);
                (base_of(program, *rate_micro, amount), basis)
            }
            Effect::Multiplier {
                factor_micro,
                lines,
            } => {
                let (amount, basis) = scope(lines, frame, event);
                let base = i128::from(base_of(program, ctx.earn_rate_micro, amount));
                let extra = round_div(
                    base * i128::from(factor_micro - RATE_SCALE),
                    i128::from(RATE_SCALE),
                    program.rounding,
                );
                (extra, basis)
            }
            Effect::NthOrder { n, points, every } => {
                let k = input.member.order_count.saturating_add(1);
                let hit = if *every { k % n == 0 } else { k == *n };
                nth = Some((*n, *every));
                (if hit { *points } else { 0 }, None)
            }
            Effect::Extension { kind, params } => {
                fired.push(FiredEffect {
                    rule_id: rule.id.clone(),
                    rule_version: rule.version,
                    kind: kind.clone(),
                    params: params.clone(),
                });
                continue;
            }
        };
        if points <= 0 {
            continue;
        }
        let given = points.min(left);
        left -= given;
        let capped_from = (given < points).then_some(points);
        // Terms only when the store has something to check or record beyond the whole order.
        let terms = (!lims.is_empty() || nth.is_some() || basis.is_some()).then(|| {
            Box::new(AwardTerms {
                limits: lims.clone(),
                nth_order: nth,
                basis,
            })
        });
        if capped_from.is_some() {
            note = Some(format!(
                "cut to the rule's cap of {} per order",
                rule.caps.per_order.unwrap_or(0)
            ));
        }
        if given == 0 {
            continue;
        }
        awards.push(Award {
            source: rule.id.clone(),
            rule_version: Some(rule.version),
            points: given,
            description: description.clone(),
            campaign: rule.campaign_id().map(str::to_string),
            capped_from,
            terms,
        });
    }
    (fired, note)
}

fn major(minor: i64, per_unit: i64) -> f64 {
    minor as f64 / per_unit.max(1) as f64
}

pub(crate) fn event_view<'a>(input: &Input<'a>, local: &Local) -> EventView<'a> {
    let per_unit = input.program.currency.minor_per_unit();
    let mut v = EventView {
        kind: input.event.trigger().as_str(),
        event_type: input.event.trigger().as_str(),
        total_minor: 0,
        total: 0.0,
        currency: input.program.currency.code(),
        channel: None,
        store: None,
        order_id: None,
        lines: Vec::new(),
        quantity: 0,
        properties: empty_map(),
        time: crate::time::format(input.event.at()),
        date: local.date_text(),
        year: i64::from(chrono::Datelike::year(&local.date)),
        month: i64::from(chrono::Datelike::month(&local.date)),
        day: i64::from(chrono::Datelike::day(&local.date)),
        hour: i64::from(local.hour),
        minute: i64::from(local.minute),
        weekday: i64::from(local.weekday),
        day_name: local.day_name(),
    };
    match input.event {
        RuleEvent::Purchase(p) => {
            v.total_minor = p.total.minor;
            v.channel = Some(p.channel.as_str());
            v.store = p.store_id.as_deref();
            v.order_id = Some(&p.order_id);
            let list_total: i128 = p
                .lines
                .iter()
                .map(|l| i128::from(l.unit_price_minor) * i128::from(l.quantity))
                .sum();
            v.lines = p
                .lines
                .iter()
                .map(|l| {
                    let amount_minor = l.unit_price_minor.saturating_mul(l.quantity);
                    // A discounted order's lines are worth their share of what was paid.
                    let paid_minor = if list_total > 0 && list_total != i128::from(p.total.minor) {
                        i64::try_from(
                            i128::from(amount_minor) * i128::from(p.total.minor) / list_total,
                        )
                        .unwrap_or(amount_minor)
                    } else {
                        amount_minor
                    };
                    LineView {
                        sku: &l.sku,
                        category: l.category.as_deref(),
                        quantity: l.quantity,
                        price_minor: l.unit_price_minor,
                        price: major(l.unit_price_minor, per_unit),
                        amount_minor,
                        amount: major(amount_minor, per_unit),
                        paid_minor,
                    }
                })
                .collect();
            v.quantity = p.lines.iter().map(|l| l.quantity).sum();
        }
        RuleEvent::Custom(c) => {
            v.event_type = &c.kind;
            v.properties = &c.properties;
        }
        RuleEvent::Refund {
            order_id,
            amount_minor,
            ..
        } => {
            v.total_minor = amount_minor;
            v.order_id = Some(order_id);
        }
        RuleEvent::Enrolment { .. } | RuleEvent::Birthday { .. } => {}
    }
    v.total = major(v.total_minor, per_unit);
    v
}

pub(crate) fn member_view<'a>(
    m: &'a MemberFacts,
    local: &Local,
    tz: chrono_tz::Tz,
    per_unit: i64,
) -> MemberView<'a> {
    MemberView {
        id: m.id.as_deref(),
        tier: m.tier.as_deref(),
        attributes: &m.attributes,
        age: m.birth_date.map(|b| age(b, local.date)),
        days_since_enrolment: m
            .enrolled_at
            .map(|t| {
                (local.date - t.with_timezone(&tz).date_naive())
                    .num_days()
                    .max(0)
            })
            .unwrap_or(0),
        order_count: m.order_count,
        lifetime_spend_minor: m.lifetime_spend_minor,
        lifetime_spend: major(m.lifetime_spend_minor, per_unit),
        birthday_today: m.birth_date.is_some_and(|b| is_birthday(b, local.date)),
    }
}

impl Earner for RuleSet {
    /// Only the rules listening to the event are evaluated (see [`RuleSet::evaluate`]), and of
    /// those only the ones whose definition can reach the member need it.
    fn reads_member(&self, scope: &EarnScope<'_>) -> bool {
        let trigger = match scope.event {
            Trigger::Purchase(_) => TriggerKind::Purchase,
            Trigger::Custom(_) => TriggerKind::Custom,
        };
        self.rules
            .iter()
            .any(|r| r.trigger == trigger && r.reads_member)
    }

    fn awards(&self, ctx: &EarnContext<'_>) -> Vec<Award> {
        let event = match ctx.event {
            Trigger::Purchase(p) => RuleEvent::Purchase(p),
            Trigger::Custom(c) => RuleEvent::Custom(c),
        };
        self.evaluate(
            &Input {
                program: ctx.program,
                event,
                member: ctx.member,
                any_status: false,
                ignore_dates: false,
            },
            false,
        )
        .awards
    }
}
