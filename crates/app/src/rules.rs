//! The rules engine's use cases: each tenant's compiled rules held in memory (reloaded when
//! this node changes them, and when the tenant's rules version in the database moves, checked at
//! most every [`RULES_RECHECK`]), rule and campaign CRUD with checks that name the field,
//! simulations and backtests that write nothing, and the triggers that are not purchases
//! (enrolment, birthday, refund).
//!
//! The compiled set is only a cache: caps and budgets are enforced by the store in the write
//! transaction, so a node that has not yet seen a change can never overspend a budget.

use crate::error::AppError;
use crate::service::{App, Principal};
use chrono::{DateTime, Datelike, Utc};
use fidelis_core::earn::{Award, EarnContext, MemberFacts, Trigger};
use fidelis_core::event::{
    Channel, Custom, Line, LineInput, MemberKey, MemberRef, Purchase, PurchaseInput,
};
use fidelis_core::money::Money;
use fidelis_core::program::ProgramSettings;
use fidelis_core::rules::define::{
    CampaignDef, CampaignRecord, DefError, RuleDef, RuleRecord, Status, TriggerKind,
};
use fidelis_core::rules::engine::{
    CompiledCampaign, CompiledRule, Extensions, FiredEffect, Input, RuleEvent, RuleSet, RuleTrace,
    check_campaign,
};
use fidelis_store::awards::{Grant, GrantOutcome};
use fidelis_store::model::{Page, PurchaseOutcome, RefundOutcome};
use fidelis_store::rules::{ListUpload, RuleFilter, RuleSource};
use fidelis_store::{IdemKey, Store};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often a node checks the database's rules version of a tenant it has compiled.
pub const RULES_RECHECK: Duration = Duration::from_millis(500);
/// Longest period a backtest replays, and most events it reads.
pub const MAX_BACKTEST_DAYS: i64 = 400;
pub const MAX_BACKTEST_EVENTS: usize = 1_000_000;
/// Entries in one upload of a campaign's target list.
pub const MAX_LIST_UPLOAD: usize = 10_000;
/// Members read per page when the jobs run looks for birthdays.
const BIRTHDAY_PAGE: i64 = 200;

struct Cached {
    version: i64,
    checked: Instant,
    set: Arc<RuleSet>,
}

/// Each tenant's active rules, compiled.
pub struct RulesEngine {
    store: Store,
    cache: RwLock<HashMap<String, Cached>>,
    extensions: Extensions,
}

impl RulesEngine {
    pub fn new(store: Store) -> RulesEngine {
        RulesEngine {
            store,
            cache: RwLock::new(HashMap::new()),
            extensions: Extensions::default(),
        }
    }

    /// The tenant's compiled active rules, fresh to within [`RULES_RECHECK`] of another node's
    /// change, and at once after this node's.
    pub async fn current(&self, tenant: &str) -> Result<Arc<RuleSet>, AppError> {
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(tenant)
                && c.checked.elapsed() < RULES_RECHECK
            {
                return Ok(c.set.clone());
            }
        }
        // Stale: the first caller checks the version, the others keep the compiled set
        // meanwhile (every event arriving during the check used to read it again).
        let known = {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            match cache.get_mut(tenant) {
                Some(c) if c.checked.elapsed() < RULES_RECHECK => return Ok(c.set.clone()),
                Some(c) => {
                    c.checked = Instant::now();
                    Some((c.version, c.set.clone()))
                }
                None => None,
            }
        };
        let version = self.store.rules_version(tenant).await?;
        if let Some((v, set)) = known
            && v == version
        {
            return Ok(set);
        }
        let source = self.store.rule_source(tenant, false, None).await?;
        let set = Arc::new(
            compile_source(&source, &self.extensions, true)
                .map_err(|(_, e)| AppError::Internal(e.to_string()))?,
        );
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            tenant.to_string(),
            Cached {
                version: source.version,
                checked: Instant::now(),
                set: set.clone(),
            },
        );
        Ok(set)
    }

    pub fn invalidate(&self, tenant: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }
}

fn stub_rule(def: RuleDef) -> RuleRecord {
    RuleRecord {
        id: "new".into(),
        version: 1,
        status: Status::Draft,
        definition: def,
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// Compiles what the store loaded. With `skip_bad`, a rule that no longer compiles (stored
/// before a check it fails was added) is left out and logged, so it cannot stop the others;
/// without, the first failure is returned with the rule's id.
pub fn compile_source(
    src: &RuleSource,
    ext: &Extensions,
    skip_bad: bool,
) -> Result<RuleSet, (String, DefError)> {
    let mut campaigns: HashMap<String, Arc<CompiledCampaign>> = HashMap::new();
    for (rec, list) in &src.campaigns {
        let list: HashSet<String> = list.iter().cloned().collect();
        match CompiledCampaign::compile(rec, list) {
            Ok(c) => {
                campaigns.insert(rec.id.clone(), Arc::new(c));
            }
            Err(e) if skip_bad => {
                tracing::warn!(campaign = %rec.id, error = %e, "a stored campaign does not compile; its rules are left out")
            }
            Err(e) => return Err((rec.id.clone(), e)),
        }
    }
    let mut rules = Vec::with_capacity(src.rules.len());
    for rec in &src.rules {
        let campaign = match &rec.definition.campaign_id {
            None => None,
            Some(id) => match campaigns.get(id) {
                Some(c) => Some(c.clone()),
                None if skip_bad => continue,
                None => {
                    return Err((
                        rec.id.clone(),
                        DefError::new("campaign_id", format!("campaign `{id}` is missing")),
                    ));
                }
            },
        };
        match CompiledRule::compile(rec, campaign, ext) {
            Ok(r) => rules.push(r),
            Err(e) if skip_bad => {
                tracing::warn!(rule = %rec.id, error = %e, "a stored rule does not compile; it is left out")
            }
            Err(e) => return Err((rec.id.clone(), e)),
        }
    }
    Ok(RuleSet::new(rules, src.version))
}

fn invalid(e: DefError) -> AppError {
    AppError::invalid(e.field, e.reason)
}

/// What a simulation is asked about.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateInput {
    pub event: SimEvent,
    #[serde(default)]
    pub member: Option<SimMember>,
    /// Evaluate draft and paused rules as if they were active.
    #[serde(default)]
    pub include_drafts: bool,
    /// Evaluate only these rules.
    #[serde(default)]
    pub rule_ids: Option<Vec<String>>,
}

/// The event of a simulation; `trigger` says which kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case", deny_unknown_fields)]
pub enum SimEvent {
    Purchase {
        channel: Channel,
        total: String,
        #[serde(default)]
        lines: Vec<LineInput>,
        #[serde(default)]
        store_id: Option<String>,
        #[serde(default)]
        order_id: Option<String>,
        #[serde(default)]
        occurred_at: Option<String>,
    },
    Custom {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        properties: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        occurred_at: Option<String>,
    },
    Refund {
        order_id: String,
        amount: String,
        #[serde(default)]
        occurred_at: Option<String>,
    },
    Enrolment {
        #[serde(default)]
        occurred_at: Option<String>,
    },
    Birthday {
        #[serde(default)]
        occurred_at: Option<String>,
    },
}

/// The member of a simulation: an enrolled member by `id`, and/or facts given here (which
/// override the stored ones).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMember {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub order_count: Option<i64>,
    /// Decimal string in the programme's currency.
    #[serde(default)]
    pub lifetime_spend: Option<String>,
    #[serde(default)]
    pub enrolled_at: Option<String>,
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// What an event would earn, and why each rule applied or not. Nothing is written.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// Points of every award below.
    pub points: i64,
    /// Awards: the programme's base rate (and tier or plan multipliers), then the rules'.
    pub awards: Vec<Award>,
    pub rules: Vec<RuleTrace>,
    /// Effects for other capabilities (rewards, badges, challenges) the rules would fire.
    pub effects: Vec<FiredEffect>,
    /// Per-member caps and budgets are checked when the event is recorded (each rule lists
    /// the ones that apply); the points here are before them.
    pub note: &'static str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestInput {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleBacktest {
    pub rule_id: String,
    pub version: i64,
    pub name: String,
    pub points: i64,
    pub awards: i64,
}

/// What a campaign would have issued over a past period of stored events. Nothing is written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backtest {
    pub campaign_id: String,
    pub from: String,
    pub to: String,
    pub events_scanned: i64,
    pub events_matched: i64,
    /// Points the campaign's rules would have awarded, after caps and the budget.
    pub points: i64,
    /// Distinct members who would have received points.
    pub members: i64,
    pub budget_points: Option<i64>,
    /// Share of the budget the points use, in percent.
    pub budget_used_percent: Option<f64>,
    /// When the budget would have run out, if it would have.
    pub budget_exhausted_at: Option<String>,
    /// Points that caps or the budget would have cut.
    pub capped_points: i64,
    pub by_rule: Vec<RuleBacktest>,
    /// True when the period held more than the events a backtest reads.
    pub truncated: bool,
    pub note: &'static str,
}

fn time_field(
    field: &str,
    v: &Option<String>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AppError> {
    match v {
        None => Ok(now),
        Some(s) => fidelis_core::time::parse(s).ok_or_else(|| {
            AppError::invalid(
                field,
                "must be an RFC 3339 time such as 2026-11-22T10:00:00Z",
            )
        }),
    }
}

impl App {
    pub(crate) async fn rule_set(&self, tenant: &str) -> Result<Arc<RuleSet>, AppError> {
        self.rules.current(tenant).await
    }

    async fn check_rule(&self, tenant: &str, def: &RuleDef) -> Result<(), AppError> {
        let campaign = match &def.campaign_id {
            None => None,
            Some(id) => {
                let rec = self.store.campaign(tenant, id).await.map_err(|e| match e {
                    fidelis_store::StoreError::NotFound(_) => {
                        AppError::invalid("campaign_id", format!("there is no campaign `{id}`"))
                    }
                    other => other.into(),
                })?;
                Some(Arc::new(
                    CompiledCampaign::compile(&rec, HashSet::new()).map_err(invalid)?,
                ))
            }
        };
        CompiledRule::compile(&stub_rule(def.clone()), campaign, &self.rules.extensions)
            .map_err(invalid)?;
        Ok(())
    }

    pub async fn create_rule(
        &self,
        p: &Principal,
        def: RuleDef,
        idem: Option<IdemKey>,
    ) -> Result<(RuleRecord, bool), AppError> {
        p.admin("creating rules")?;
        self.check_rule(&p.tenant, &def).await?;
        let out = self
            .store
            .create_rule(
                &p.tenant,
                def,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    /// Saves a new version of a rule; awards already given keep the version that gave them.
    pub async fn update_rule(
        &self,
        p: &Principal,
        id: &str,
        def: RuleDef,
        idem: Option<IdemKey>,
    ) -> Result<(RuleRecord, bool), AppError> {
        p.admin("changing rules")?;
        self.check_rule(&p.tenant, &def).await?;
        let out = self
            .store
            .update_rule(
                &p.tenant,
                id,
                def,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    pub async fn set_rule_status(
        &self,
        p: &Principal,
        id: &str,
        to: Status,
        idem: Option<IdemKey>,
    ) -> Result<(RuleRecord, bool), AppError> {
        p.admin("changing a rule's status")?;
        if to == Status::Active {
            // A rule stored before a check it now fails is not switched on.
            let current = self.store.rule(&p.tenant, id, None).await?;
            self.check_rule(&p.tenant, &current.definition).await?;
        }
        let out = self
            .store
            .set_rule_status(
                &p.tenant,
                id,
                to,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    pub async fn rule(
        &self,
        p: &Principal,
        id: &str,
        version: Option<i64>,
    ) -> Result<RuleRecord, AppError> {
        p.admin("reading rules")?;
        Ok(self.store.rule(&p.tenant, id, version).await?)
    }

    pub async fn rule_versions(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<Vec<RuleRecord>, AppError> {
        p.admin("reading rules")?;
        Ok(self.store.rule_versions(&p.tenant, id).await?)
    }

    pub async fn list_rules(
        &self,
        p: &Principal,
        status: Option<&str>,
        campaign_id: Option<String>,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<RuleRecord>, AppError> {
        p.admin("listing rules")?;
        let status = match status {
            None => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| {
                AppError::invalid("status", "must be draft, active, paused or ended")
            })?),
        };
        Ok(self
            .store
            .list_rules(
                &p.tenant,
                RuleFilter {
                    status,
                    campaign_id,
                },
                cursor,
                limit,
            )
            .await?)
    }

    pub async fn create_campaign(
        &self,
        p: &Principal,
        def: CampaignDef,
        idem: Option<IdemKey>,
    ) -> Result<(CampaignRecord, bool), AppError> {
        p.admin("creating campaigns")?;
        check_campaign(&def).map_err(invalid)?;
        let out = self
            .store
            .create_campaign(
                &p.tenant,
                def,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    pub async fn update_campaign(
        &self,
        p: &Principal,
        id: &str,
        def: CampaignDef,
        idem: Option<IdemKey>,
    ) -> Result<(CampaignRecord, bool), AppError> {
        p.admin("changing campaigns")?;
        check_campaign(&def).map_err(invalid)?;
        let out = self
            .store
            .update_campaign(
                &p.tenant,
                id,
                def,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    pub async fn set_campaign_status(
        &self,
        p: &Principal,
        id: &str,
        to: Status,
        idem: Option<IdemKey>,
    ) -> Result<(CampaignRecord, bool), AppError> {
        p.admin("changing a campaign's status")?;
        let out = self
            .store
            .set_campaign_status(
                &p.tenant,
                id,
                to,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    pub async fn campaign(&self, p: &Principal, id: &str) -> Result<CampaignRecord, AppError> {
        p.admin("reading campaigns")?;
        Ok(self.store.campaign(&p.tenant, id).await?)
    }

    pub async fn list_campaigns(
        &self,
        p: &Principal,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<CampaignRecord>, AppError> {
        p.admin("listing campaigns")?;
        Ok(self.store.list_campaigns(&p.tenant, cursor, limit).await?)
    }

    /// Adds members (ids or external ids) to a campaign's target list.
    pub async fn upload_campaign_list(
        &self,
        p: &Principal,
        id: &str,
        members: Vec<String>,
        replace: bool,
        idem: Option<IdemKey>,
    ) -> Result<(ListUpload, bool), AppError> {
        p.admin("changing campaigns")?;
        if members.len() > MAX_LIST_UPLOAD {
            return Err(AppError::invalid(
                "members",
                format!("at most {MAX_LIST_UPLOAD} members per upload; send several"),
            ));
        }
        for (i, m) in members.iter().enumerate() {
            if m.trim().is_empty() || m.len() > fidelis_core::event::MAX_ID_LEN {
                return Err(AppError::invalid(
                    format!("members[{i}]"),
                    "must be a member id or external id of 1 to 128 characters",
                ));
            }
        }
        let out = self
            .store
            .upload_campaign_list(
                &p.tenant,
                id,
                members,
                replace,
                &p.actor(),
                idem,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        self.rules.invalidate(&p.tenant);
        Ok(out)
    }

    async fn sim_member(
        &self,
        tenant: &str,
        m: Option<SimMember>,
        settings: &ProgramSettings,
        now: DateTime<Utc>,
    ) -> Result<MemberFacts, AppError> {
        let m = m.unwrap_or_default();
        let mut facts = match &m.id {
            Some(id) => self
                .store
                .member_facts(tenant, &MemberKey::Id(id.clone()))
                .await?
                .ok_or_else(|| AppError::NotFound(format!("member `{id}`")))?,
            None => MemberFacts::default(),
        };
        if let Some(t) = m.tier {
            facts.tier = Some(t);
        }
        if let Some(a) = m.attributes {
            facts.attributes = a;
        }
        if let Some(n) = m.order_count {
            if n < 0 {
                return Err(AppError::invalid("member.order_count", "must be 0 or more"));
            }
            facts.order_count = n;
        }
        if let Some(s) = &m.lifetime_spend {
            facts.lifetime_spend_minor = Money::parse(s, settings.currency)
                .map_err(|e| AppError::invalid("member.lifetime_spend", e.to_string()))?
                .minor;
        }
        if m.enrolled_at.is_some() {
            facts.enrolled_at = Some(time_field("member.enrolled_at", &m.enrolled_at, now)?);
        }
        if let Some(b) = &m.birth_date {
            facts.birth_date = Some(chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").map_err(
                |_| AppError::invalid("member.birth_date", "must be a date YYYY-MM-DD"),
            )?);
        }
        Ok(facts)
    }

    /// What an event would earn, and for each rule why it applies or not. Writes nothing.
    pub async fn simulate(
        &self,
        p: &Principal,
        input: SimulateInput,
    ) -> Result<Simulation, AppError> {
        p.admin("simulating rules")?;
        let settings = self.settings(&p.tenant).await?;
        let now = self.clock.now();
        let member = self
            .sim_member(&p.tenant, input.member, &settings, now)
            .await?;
        let set = if input.include_drafts || input.rule_ids.is_some() {
            let mut src = self
                .store
                .rule_source(
                    &p.tenant,
                    input.include_drafts || input.rule_ids.is_some(),
                    None,
                )
                .await?;
            if let Some(ids) = &input.rule_ids {
                for id in ids {
                    if !src.rules.iter().any(|r| &r.id == id) {
                        return Err(AppError::invalid(
                            "rule_ids",
                            format!("no rule `{id}` that has not ended"),
                        ));
                    }
                }
                src.rules.retain(|r| ids.contains(&r.id));
            }
            Arc::new(
                compile_source(&src, &self.rules.extensions, true).map_err(|(_, e)| invalid(e))?,
            )
        } else {
            self.rule_set(&p.tenant).await?
        };
        let evaluate = |event: RuleEvent<'_>| {
            set.evaluate(
                &Input {
                    program: &settings,
                    event,
                    member: &member,
                    any_status: input.include_drafts,
                    ignore_dates: false,
                },
                true,
            )
        };
        let (mut awards, eval) = match &input.event {
            SimEvent::Purchase {
                channel,
                total,
                lines,
                store_id,
                order_id,
                occurred_at,
            } => {
                let purchase = PurchaseInput {
                    member: MemberRef {
                        id: Some(member.id.clone().unwrap_or_else(|| "simulated".into())),
                        external_id: None,
                    },
                    order_id: order_id.clone().unwrap_or_else(|| "simulation".into()),
                    occurred_at: occurred_at.clone(),
                    channel: *channel,
                    store_id: store_id.clone(),
                    currency: settings.currency.code().into(),
                    total: total.clone(),
                    lines: lines.clone(),
                }
                .validate(&settings, now)
                .map_err(|e| AppError::invalid(format!("event.{}", e.field), e.reason))?;
                let base = self.base_awards(&EarnContext {
                    program: &settings,
                    event: Trigger::Purchase(&purchase),
                    member: &member,
                    now,
                });
                (base, evaluate(RuleEvent::Purchase(&purchase)))
            }
            SimEvent::Custom {
                kind,
                properties,
                occurred_at,
            } => {
                let custom = fidelis_core::event::CustomInput {
                    member: MemberRef {
                        id: Some("simulated".into()),
                        external_id: None,
                    },
                    kind: kind.clone(),
                    properties: properties.clone(),
                    occurred_at: occurred_at.clone(),
                }
                .validate(now)
                .map_err(|e| AppError::invalid(format!("event.{}", e.field), e.reason))?;
                let base = self.base_awards(&EarnContext {
                    program: &settings,
                    event: Trigger::Custom(&custom),
                    member: &member,
                    now,
                });
                (base, evaluate(RuleEvent::Custom(&custom)))
            }
            SimEvent::Refund {
                order_id,
                amount,
                occurred_at,
            } => {
                let amount_minor = Money::parse(amount, settings.currency)
                    .map_err(|e| AppError::invalid("event.amount", e.to_string()))?
                    .minor;
                let at = time_field("event.occurred_at", occurred_at, now)?;
                (
                    Vec::new(),
                    evaluate(RuleEvent::Refund {
                        order_id,
                        amount_minor,
                        at,
                    }),
                )
            }
            SimEvent::Enrolment { occurred_at } => {
                let at = time_field("event.occurred_at", occurred_at, now)?;
                (Vec::new(), evaluate(RuleEvent::Enrolment { at }))
            }
            SimEvent::Birthday { occurred_at } => {
                let at = time_field("event.occurred_at", occurred_at, now)?;
                (Vec::new(), evaluate(RuleEvent::Birthday { at }))
            }
        };
        awards.extend(eval.awards.into_iter().map(|a| Award { terms: None, ..a }));
        Ok(Simulation {
            points: awards.iter().map(|a| a.points).sum(),
            awards,
            rules: eval.traces,
            effects: eval.effects,
            note: "per-member caps and budgets are checked when the event is recorded; points here are before them",
        })
    }

    /// After a member's enrolment (through the API or by a first purchase): the enrolment
    /// rules, once per member. A failure is logged and does not undo the enrolment.
    pub(crate) async fn after_enrolment(&self, tenant: &str, member_id: &str) {
        if let Err(e) = self.enrolment_grant(tenant, member_id).await {
            tracing::warn!(tenant, member = member_id, error = %e, "enrolment rules could not be applied");
        }
    }

    async fn enrolment_grant(
        &self,
        tenant: &str,
        member_id: &str,
    ) -> Result<Option<GrantOutcome>, AppError> {
        let set = self.rule_set(tenant).await?;
        if !set.listens_to(TriggerKind::Enrolment) {
            return Ok(None);
        }
        let settings = self.settings(tenant).await?;
        let now = self.clock.now();
        let Some(facts) = self
            .store
            .member_facts(tenant, &MemberKey::Id(member_id.to_string()))
            .await?
        else {
            return Ok(None);
        };
        let at = facts.enrolled_at.unwrap_or(now);
        let grant = Grant {
            member_id: member_id.to_string(),
            key: format!("enrolment:{member_id}"),
            kind: "enrolment".into(),
            occurred_at: at.timestamp_micros(),
            reason: "enrolment bonus".into(),
        };
        self.grant_rules(
            tenant,
            &set,
            &settings,
            &facts,
            RuleEvent::Enrolment { at },
            grant,
        )
        .await
    }

    async fn grant_rules(
        &self,
        tenant: &str,
        set: &RuleSet,
        settings: &ProgramSettings,
        facts: &MemberFacts,
        event: RuleEvent<'_>,
        grant: Grant,
    ) -> Result<Option<GrantOutcome>, AppError> {
        let awards = set
            .evaluate(
                &Input {
                    program: settings,
                    event,
                    member: facts,
                    any_status: false,
                    ignore_dates: false,
                },
                false,
            )
            .awards;
        if awards.is_empty() {
            return Ok(None);
        }
        let (out, _) = self
            .store
            .grant_awards(
                tenant,
                grant,
                awards,
                settings.clone(),
                None,
                self.clock.now().timestamp_micros(),
            )
            .await?;
        Ok(Some(out))
    }

    /// After a purchase: a member it enrolled gets the enrolment rules.
    pub(crate) async fn after_purchase(&self, tenant: &str, out: &PurchaseOutcome, replayed: bool) {
        if out.enrolled && !out.duplicate && !replayed {
            self.after_enrolment(tenant, &out.member_id).await;
        }
    }

    /// After a refund: the refund rules, once per refund event.
    pub(crate) async fn after_refund(&self, tenant: &str, out: &RefundOutcome, replayed: bool) {
        if out.duplicate || replayed {
            return;
        }
        let result: Result<_, AppError> = async {
            let set = self.rule_set(tenant).await?;
            if !set.listens_to(TriggerKind::Refund) {
                return Ok(None);
            }
            let settings = self.settings(tenant).await?;
            let facts = self
                .store
                .member_facts(tenant, &MemberKey::Id(out.member_id.clone()))
                .await?
                .unwrap_or_default();
            let at = self.clock.now();
            let grant = Grant {
                member_id: out.member_id.clone(),
                key: format!("refund:{}", out.event_id),
                kind: "refund".into(),
                occurred_at: at.timestamp_micros(),
                reason: format!("refund of order {}", out.order_id),
            };
            let event = RuleEvent::Refund {
                order_id: &out.order_id,
                amount_minor: out.refunded_minor,
                at,
            };
            self.grant_rules(tenant, &set, &settings, &facts, event, grant)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(tenant, order = %out.order_id, error = %e, "refund rules could not be applied");
        }
    }

    /// Birthday rules of one tenant for members whose birthday is today in the programme's
    /// zone, once per member per year. Returns the members granted.
    pub async fn birthday_grants(&self, tenant: &str) -> Result<i64, AppError> {
        let set = self.rule_set(tenant).await?;
        if !set.listens_to(TriggerKind::Birthday) {
            return Ok(0);
        }
        let settings = self.settings(tenant).await?;
        let now = self.clock.now();
        let today = fidelis_core::rules::schedule::local_date(&settings, now);
        let month_day = today.format("%m-%d").to_string();
        let leap = chrono::NaiveDate::from_ymd_opt(today.year(), 2, 29).is_some();
        let leap_too = month_day == "02-28" && !leap;
        let (mut cursor, mut granted) = (String::new(), 0);
        loop {
            let page = self
                .store
                .birthday_members(
                    tenant,
                    &month_day,
                    leap_too,
                    today.year(),
                    &cursor,
                    BIRTHDAY_PAGE,
                )
                .await?;
            for facts in &page {
                let Some(id) = facts.id.clone() else { continue };
                let grant = Grant {
                    member_id: id.clone(),
                    key: format!("birthday:{id}:{}", today.year()),
                    kind: "birthday".into(),
                    occurred_at: now.timestamp_micros(),
                    reason: "birthday bonus".into(),
                };
                if self
                    .grant_rules(
                        tenant,
                        &set,
                        &settings,
                        facts,
                        RuleEvent::Birthday { at: now },
                        grant,
                    )
                    .await?
                    .is_some()
                {
                    granted += 1;
                }
            }
            match page.last().and_then(|f| f.id.clone()) {
                Some(last) if page.len() as i64 == BIRTHDAY_PAGE => cursor = last,
                _ => return Ok(granted),
            }
        }
    }

    /// The rules' part of a jobs run: birthdays, for `tenant` or every tenant. Failures are
    /// logged; the ledger's jobs have already run.
    pub(crate) async fn rule_jobs(&self, tenant: Option<&str>) {
        let tenants = match tenant {
            Some(t) => vec![t.to_string()],
            None => match self.store.tenant_ids().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list tenants for birthday rules");
                    return;
                }
            },
        };
        for t in tenants {
            match self.birthday_grants(&t).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tenant = %t, members = n, "birthday rules applied"),
                Err(e) => {
                    tracing::warn!(tenant = %t, error = %e, "birthday rules could not be applied")
                }
            }
        }
    }

    /// What a campaign's rules (whatever their status, dates ignored; schedules, conditions,
    /// target, caps and budget applied) would have issued over the stored events of
    /// `[from, to)`. Writes nothing.
    pub async fn backtest(
        &self,
        p: &Principal,
        campaign_id: &str,
        input: BacktestInput,
    ) -> Result<Backtest, AppError> {
        p.admin("backtesting campaigns")?;
        let from = fidelis_core::time::parse(&input.from)
            .ok_or_else(|| AppError::invalid("from", "must be an RFC 3339 time"))?;
        let to = fidelis_core::time::parse(&input.to)
            .ok_or_else(|| AppError::invalid("to", "must be an RFC 3339 time"))?;
        if to <= from {
            return Err(AppError::invalid("to", "must be after `from`"));
        }
        if (to - from).num_days() > MAX_BACKTEST_DAYS {
            return Err(AppError::invalid(
                "to",
                format!("a backtest covers at most {MAX_BACKTEST_DAYS} days"),
            ));
        }
        let campaign = self.store.campaign(&p.tenant, campaign_id).await?;
        let settings = self.settings(&p.tenant).await?;
        let src = self
            .store
            .rule_source(&p.tenant, true, Some(campaign_id))
            .await?;
        let set = compile_source(&src, &self.rules.extensions, false)
            .map_err(|(id, e)| AppError::invalid(format!("rule {id}: {}", e.field), e.reason))?;
        let mut out = Backtest {
            campaign_id: campaign_id.to_string(),
            from: fidelis_core::time::format(from),
            to: fidelis_core::time::format(to),
            budget_points: campaign.definition.budget_points,
            note: "replays stored purchases, refunds and custom events with the members' current tier and attributes; enrolment and birthday rules are not replayed",
            ..Backtest::default()
        };
        out.by_rule = set
            .rules()
            .iter()
            .map(|r| RuleBacktest {
                rule_id: r.id.clone(),
                version: r.version,
                name: r.name.clone(),
                ..RuleBacktest::default()
            })
            .collect();
        if set.is_empty() {
            return Ok(out);
        }
        let mut running: HashMap<String, (i64, i64)> = self
            .store
            .spend_before(&p.tenant, from.timestamp_micros())
            .await?
            .into_iter()
            .map(|(m, n, s)| (m, (n, s)))
            .collect();
        let mut facts: HashMap<String, MemberFacts> = HashMap::new();
        let mut counters: HashMap<(Arc<str>, String, Arc<str>), i64> = HashMap::new();
        let mut members: HashSet<String> = HashSet::new();
        let mut after = (i64::MIN, i64::MIN);
        let (start, end) = (from.timestamp_micros(), to.timestamp_micros());
        const PAGE: i64 = 2000;
        'pages: loop {
            let page = self
                .store
                .events_between(&p.tenant, start, end, after, PAGE)
                .await?;
            for e in &page {
                after = (e.occurred_at, e.id);
                if out.events_scanned as usize >= MAX_BACKTEST_EVENTS {
                    out.truncated = true;
                    break 'pages;
                }
                out.events_scanned += 1;
                if !facts.contains_key(&e.member_id) {
                    let f = self
                        .store
                        .member_facts(&p.tenant, &MemberKey::Id(e.member_id.clone()))
                        .await?
                        .unwrap_or_default();
                    facts.insert(e.member_id.clone(), f);
                }
                let (count, spend) = running.get(&e.member_id).copied().unwrap_or((0, 0));
                let mut f = facts.get(&e.member_id).cloned().unwrap_or_default();
                f.order_count = count;
                f.lifetime_spend_minor = spend;
                let at = fidelis_core::time::from_micros(e.occurred_at);
                let awards = match replay(e, &settings, at) {
                    Some(Replayed::Purchase(purchase)) => {
                        eval_awards(&set, &settings, RuleEvent::Purchase(&purchase), &f)
                    }
                    Some(Replayed::Custom(custom)) => {
                        eval_awards(&set, &settings, RuleEvent::Custom(&custom), &f)
                    }
                    Some(Replayed::Refund) => eval_awards(
                        &set,
                        &settings,
                        RuleEvent::Refund {
                            order_id: e.order_id.as_deref().unwrap_or(""),
                            amount_minor: e.amount_minor,
                            at,
                        },
                        &f,
                    ),
                    None => Vec::new(),
                };
                let mut matched = false;
                for a in awards {
                    let given = settle_in_memory(&mut counters, &e.member_id, &a, count);
                    out.capped_points += a.points - given;
                    if given > 0 {
                        matched = true;
                        out.points += given;
                        members.insert(e.member_id.clone());
                        if let Some(r) = out.by_rule.iter_mut().find(|r| r.rule_id == a.source) {
                            r.points += given;
                            r.awards += 1;
                        }
                    }
                    if let Some(b) = out.budget_points
                        && out.budget_exhausted_at.is_none()
                        && out.points >= b
                    {
                        out.budget_exhausted_at = Some(fidelis_core::time::format(at));
                    }
                }
                if matched {
                    out.events_matched += 1;
                }
                let entry = running.entry(e.member_id.clone()).or_default();
                match e.kind.as_str() {
                    "purchase" => *entry = (entry.0 + 1, entry.1 + e.amount_minor),
                    "refund" => entry.1 -= e.amount_minor,
                    _ => {}
                }
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        out.members = members.len() as i64;
        out.budget_used_percent = out
            .budget_points
            .filter(|b| *b > 0)
            .map(|b| (out.points as f64 * 10_000.0 / b as f64).round() / 100.0);
        Ok(out)
    }

    /// The awards of the non-rule earners (base rate, tier, plan): the earners', with the tier's
    /// that the writer adds to a purchase.
    fn base_awards(&self, ctx: &EarnContext<'_>) -> Vec<Award> {
        let awards = self.awards(ctx);
        match ctx.event {
            Trigger::Purchase(p) => fidelis_core::earn::with_tier_award(
                &awards,
                ctx.program,
                ctx.member.tier.as_deref(),
                p.total.minor,
            )
            .into_owned(),
            Trigger::Custom(_) => awards,
        }
    }
}

enum Replayed {
    Purchase(Purchase),
    Custom(Custom),
    Refund,
}

/// A stored event as the engine sees it again.
fn replay(
    e: &fidelis_store::awards::StoredEvent,
    settings: &ProgramSettings,
    at: DateTime<Utc>,
) -> Option<Replayed> {
    match e.kind.as_str() {
        "purchase" => {
            #[derive(Deserialize)]
            struct Payload {
                lines: Vec<Line>,
            }
            let payload: Payload = serde_json::from_str(&e.payload).ok()?;
            let channel: Channel =
                serde_json::from_value(serde_json::Value::String(e.channel.clone()?)).ok()?;
            Some(Replayed::Purchase(Purchase {
                member: MemberKey::Id(e.member_id.clone()),
                order_id: e.order_id.clone().unwrap_or_default(),
                occurred_at: at,
                channel,
                store_id: e.store_id.clone(),
                total: Money::new(e.amount_minor, settings.currency),
                lines: payload.lines,
            }))
        }
        "custom" => Some(Replayed::Custom(Custom {
            member: MemberKey::Id(e.member_id.clone()),
            kind: e.event_type.clone(),
            properties: serde_json::from_str(&e.payload).unwrap_or_default(),
            occurred_at: at,
        })),
        "refund" => Some(Replayed::Refund),
        _ => None,
    }
}

fn eval_awards(
    set: &RuleSet,
    settings: &ProgramSettings,
    event: RuleEvent<'_>,
    facts: &MemberFacts,
) -> Vec<Award> {
    set.evaluate(
        &Input {
            program: settings,
            event,
            member: facts,
            any_status: true,
            ignore_dates: true,
        },
        false,
    )
    .awards
}

/// The store's cut of an award by its caps, budget and Nth-order check, on counters in memory.
fn settle_in_memory(
    counters: &mut HashMap<(Arc<str>, String, Arc<str>), i64>,
    member: &str,
    a: &Award,
    order_count: i64,
) -> i64 {
    let Some(terms) = a.terms.as_deref() else {
        return a.points;
    };
    let mut allowed = a.points.max(0);
    if let Some((n, every)) = terms.nth_order {
        let k = order_count + 1;
        if !(if every { n > 0 && k % n == 0 } else { k == n }) {
            allowed = 0;
        }
    }
    let key = |l: &fidelis_core::earn::AwardLimit| {
        (
            l.counter.clone(),
            if l.per_member {
                member.to_string()
            } else {
                String::new()
            },
            l.period.clone(),
        )
    };
    for l in terms.limits.iter() {
        let used = counters.get(&key(l)).copied().unwrap_or(0);
        allowed = allowed.min((l.max - used).max(0));
    }
    for l in terms.limits.iter() {
        *counters.entry(key(l)).or_default() += allowed;
    }
    allowed
}
