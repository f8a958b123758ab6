//! Rules and campaigns as they are written (JSON on the wire, stored as versions), and the
//! records the store returns. Checking a definition compiles it (see `engine.rs`); a refusal
//! names the field (`condition`, `effects[1].lines`, `schedule[0].from`) and why.

use serde::{Deserialize, Serialize};

/// Limits on a definition, named so the documentation and the tests can refer to them.
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
pub const MAX_EFFECTS: usize = 10;
pub const MAX_WINDOWS: usize = 14;
/// Largest fixed award of one effect, cap or budget.
pub const MAX_POINTS: i64 = 1_000_000_000;
/// Largest budget of a rule or campaign.
pub const MAX_BUDGET_POINTS: i64 = 1_000_000_000_000;
/// Largest multiplier factor and per-amount rate.
pub const MAX_FACTOR: i64 = 100;
pub const MAX_RATE: i64 = 1000;
/// Highest `n` of an Nth-order bonus.
pub const MAX_NTH_ORDER: i64 = 10_000;
/// Rules a tenant may hold (any status) and have active at once.
pub const MAX_RULES: i64 = 5_000;
pub const MAX_ACTIVE_RULES: i64 = 500;
/// Campaigns a tenant may hold, and members in one campaign's uploaded list.
pub const MAX_CAMPAIGNS: i64 = 1_000;
pub const MAX_TARGET_LIST: usize = 100_000;

/// What a rule listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Purchase,
    Refund,
    /// A custom event of the type named by the rule's `event_type`.
    Custom,
    /// A member was enrolled (through the API, or by their first purchase).
    Enrolment,
    /// The member's birthday, once a year, found by the jobs run.
    Birthday,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Purchase => "purchase",
            TriggerKind::Refund => "refund",
            TriggerKind::Custom => "custom",
            TriggerKind::Enrolment => "enrolment",
            TriggerKind::Birthday => "birthday",
        }
    }
}

/// How a matching rule combines with the others (rules run by ascending `priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stacking {
    /// Applies, and later rules are evaluated too.
    #[default]
    Stackable,
    /// Applies only alone: skipped when an earlier rule applied; when it applies, no later
    /// rule is evaluated.
    Exclusive,
    /// Applies with the earlier rules; no later rule is evaluated.
    StopAfter,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EffectDef {
    /// A fixed number of points.
    Points { points: i64 },
    /// Points per major currency unit ("2" = 2 points per euro) of the order total, or of the
    /// lines `lines` keeps (an expression over `line`).
    PerAmount {
        rate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<String>,
    },
    /// Multiplies the base earning ("2" doubles it): awards (factor − 1) × the base points of
    /// the order, or of the lines `lines` keeps.
    Multiplier {
        factor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<String>,
    },
    /// `points` on the member's `n`th order (every `n`th order when `every`).
    NthOrder {
        n: i64,
        points: i64,
        #[serde(default)]
        every: bool,
    },
    /// An effect that a later capability handles (issue a reward, award a badge, progress a
    /// challenge): refused unless a handler for `kind` is registered.
    Extension {
        kind: String,
        #[serde(default)]
        params: serde_json::Value,
    },
}

/// A time window of a schedule, in the programme's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    /// Days of the week: `mon` … `sun` (or full names), `weekdays`, `weekend`.
    pub days: Vec<String>,
    /// Start, `HH:MM`, inclusive (default 00:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End, `HH:MM`, exclusive (default 24:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Caps on what a rule (or a campaign's rules together) may award.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_member_day: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_member_week: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_member_month: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_member_lifetime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_order: Option<i64>,
    /// Points the rule may award in all, to everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_points: Option<i64>,
}

impl CapsDef {
    pub fn is_empty(&self) -> bool {
        *self == CapsDef::default()
    }
}

fn default_condition() -> String {
    "true".into()
}

fn default_priority() -> i64 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub trigger: TriggerKind,
    /// The custom event type a `custom` rule listens to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// A bool expression; `true` when omitted.
    #[serde(default = "default_condition")]
    pub condition: String,
    pub effects: Vec<EffectDef>,
    /// Lower runs first (default 100); ties by rule id.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// RFC 3339; the rule applies to events from this instant (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// RFC 3339; ... until this instant (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
    /// When not empty, the rule applies only inside one of these windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<WindowDef>,
    #[serde(default)]
    pub stacking: Stacking,
    #[serde(default, skip_serializing_if = "CapsDef::is_empty")]
    pub caps: CapsDef,
    /// The campaign the rule belongs to (its budget, caps, target and dates apply too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Active,
    Paused,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Ended => "ended",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        [Status::Draft, Status::Active, Status::Paused, Status::Ended]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
    /// Whether a rule or campaign may move from `self` to `to`. Ended is final.
    pub fn can_become(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Draft | Status::Paused, Status::Active)
                | (Status::Active, Status::Paused)
                | (
                    Status::Draft | Status::Active | Status::Paused,
                    Status::Ended
                )
        )
    }
}

/// Who a campaign's rules apply to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetDef {
    #[default]
    All,
    /// Members for whom this bool expression over `member` (and `program`) is true.
    Expression { expression: String },
    /// Members of the list uploaded with `POST /api/v1/campaigns/{id}/members`.
    List,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339; the campaign's rules apply from this instant (inclusive) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// ... until this one (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// Points the campaign's rules may award in all (shared); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_points: Option<i64>,
    /// Per-member caps shared by the campaign's rules (`budget_points` goes above).
    #[serde(default, skip_serializing_if = "CapsDef::is_empty")]
    pub caps: CapsDef,
    #[serde(default)]
    pub target: TargetDef,
}

/// A rule as stored: one version of its definition, and its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub id: String,
    pub version: i64,
    pub status: Status,
    pub definition: RuleDef,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub id: String,
    pub version: i64,
    pub status: Status,
    pub definition: CampaignDef,
    /// Points the campaign's rules have awarded so far (claw-backs do not return budget).
    pub spent_points: i64,
    /// Members in the uploaded target list.
    pub list_size: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A refused definition: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefError {
    pub field: String,
    pub reason: String,
}

impl DefError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> DefError {
        DefError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for DefError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

pub(crate) fn check_text(field: &str, v: &str, max: usize) -> Result<(), DefError> {
    let n = v.trim().chars().count();
    if n == 0 || n > max || v.chars().any(char::is_control) {
        return Err(DefError::new(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_points(field: &str, v: i64, max: i64) -> Result<(), DefError> {
    if v <= 0 || v > max {
        return Err(DefError::new(field, format!("must be 1 to {max}")));
    }
    Ok(())
}

impl CapsDef {
    pub(crate) fn check(&self, prefix: &str) -> Result<(), DefError> {
        for (name, v) in [
            ("per_member_day", self.per_member_day),
            ("per_member_week", self.per_member_week),
            ("per_member_month", self.per_member_month),
            ("per_member_lifetime", self.per_member_lifetime),
            ("per_order", self.per_order),
        ] {
            if let Some(v) = v {
                check_points(&format!("{prefix}{name}"), v, MAX_POINTS)?;
            }
        }
        if let Some(b) = self.budget_points {
            check_points(&format!("{prefix}budget_points"), b, MAX_BUDGET_POINTS)?;
        }
        Ok(())
    }
}

/// A decimal string ("1.5") as millionths, within `1/1_000_000 ..= max`.
pub(crate) fn micro(field: &str, v: &str, max: i64) -> Result<i64, DefError> {
    let m = crate::money::parse_minor(v, 6)
        .map_err(|e| DefError::new(field, format!("{e} (a decimal such as \"1.5\")")))?;
    if m <= 0 || m > max * 1_000_000 {
        return Err(DefError::new(
            field,
            format!("must be above 0 and at most {max}"),
        ));
    }
    Ok(m)
}

pub(crate) fn instant(
    field: &str,
    v: &Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, DefError> {
    match v {
        None => Ok(None),
        Some(s) => crate::time::parse(s).map(Some).ok_or_else(|| {
            DefError::new(
                field,
                "must be an RFC 3339 time such as 2026-12-24T00:00:00Z",
            )
        }),
    }
}

impl CampaignDef {
    /// Checks everything but the target expression (compiled with the campaign).
    pub(crate) fn check_fields(&self) -> Result<(), DefError> {
        check_text("name", &self.name, MAX_NAME_CHARS)?;
        if let Some(d) = &self.description {
            check_text("description", d, MAX_DESCRIPTION_CHARS)?;
        }
        let from = instant("starts_at", &self.starts_at)?;
        let to = instant("ends_at", &self.ends_at)?;
        if let (Some(a), Some(b)) = (from, to)
            && b <= a
        {
            return Err(DefError::new("ends_at", "must be after starts_at"));
        }
        if let Some(b) = self.budget_points {
            check_points("budget_points", b, MAX_BUDGET_POINTS)?;
        }
        if self.caps.per_order.is_some() || self.caps.budget_points.is_some() {
            return Err(DefError::new(
                "caps",
                "a campaign's caps are per member (per_member_day … per_member_lifetime); its budget is `budget_points`",
            ));
        }
        self.caps.check("caps.")
    }
}
