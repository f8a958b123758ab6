//! [`App`]: every use case, called by the HTTP handlers, the CLI and the demo alike.

use crate::clock::Clock;
use crate::error::AppError;
use crate::inputs::{AdjustmentInput, MemberInput};
use fidelis_core::ProgramSettings;
use fidelis_core::earn::{Award, BaseEarner, EarnContext, EarnScope, Earner, MemberFacts, Trigger};
use fidelis_core::event::MemberKey;
use fidelis_core::event::{CustomInput, PurchaseInput, RefundInput};
use fidelis_store::model::*;
use fidelis_store::{IdemKey, LookupBy, Store, VerifyReport};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Pos,
    Ecommerce,
    Analytics,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "pos" => Some(Scope::Pos),
            "ecommerce" => Some(Scope::Ecommerce),
            "analytics" => Some(Scope::Analytics),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Pos => "pos",
            Scope::Ecommerce => "ecommerce",
            Scope::Analytics => "analytics",
        }
    }
}

/// Who is calling: a tenant's API key and its scope.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: String,
    pub key_id: String,
    pub scope: Scope,
}

impl Principal {
    pub(crate) fn actor(&self) -> String {
        // Console users and portal members act as `user:<id>` / `member:<id>` (ids with a
        // colon); API keys as `key:<id>`.
        if self.key_id.contains(':') {
            self.key_id.clone()
        } else {
            format!("key:{}", self.key_id)
        }
    }
    pub(crate) fn allow(&self, scopes: &[Scope], what: &str) -> Result<(), AppError> {
        if scopes.contains(&self.scope) {
            Ok(())
        } else {
            let names: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
            Err(AppError::Forbidden(format!(
                "{what} needs a key with scope {}; this key has scope {}",
                names.join(" or "),
                self.scope.as_str()
            )))
        }
    }
    pub(crate) fn can_write_events(&self, what: &str) -> Result<(), AppError> {
        self.allow(&[Scope::Admin, Scope::Pos, Scope::Ecommerce], what)
    }
    pub(crate) fn can_read(&self, what: &str) -> Result<(), AppError> {
        self.allow(
            &[Scope::Admin, Scope::Pos, Scope::Ecommerce, Scope::Analytics],
            what,
        )
    }
    pub(crate) fn admin(&self, what: &str) -> Result<(), AppError> {
        self.allow(&[Scope::Admin], what)
    }
}

#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    earners: Vec<Arc<dyn Earner>>,
    programs: Arc<crate::cache::TtlCache<ProgramSettings>>,
    /// Whether each tenant has any paid-membership plan (see `earning_facts`).
    plans_offered: Arc<crate::cache::TtlCache<bool>>,
    /// The key behind each secret, by the secret's hash: every request authenticates.
    keys: Arc<crate::cache::TtlCache<Principal>>,
    /// Unknown coupon codes tried, per API key (this node's memory; see `guard`).
    pub(crate) guesses: Arc<crate::guard::GuessLimiter>,
    /// Each tenant's compiled rules (a cache; see `rules`).
    pub(crate) rules: Arc<crate::rules::RulesEngine>,
}

impl App {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> App {
        let rules = Arc::new(crate::rules::RulesEngine::new(store.clone()));
        App {
            rules,
            store,
            clock,
            earners: vec![Arc::new(BaseEarner), Arc::new(crate::earners::PlanEarner)],
            programs: Arc::default(),
            plans_offered: Arc::default(),
            keys: Arc::default(),
            guesses: Arc::default(),
        }
    }

    /// Adds an earner after the ones already there (extensions plug in here); each event's
    /// awards are every earner's awards, in order, with a purchase's tier award after the base
    /// rate's (the writer adds it).
    pub fn with_earner(mut self, earner: Arc<dyn Earner>) -> App {
        self.earners.push(earner);
        self
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp_micros()
    }

    pub async fn authenticate(&self, secret: &str) -> Result<Principal, AppError> {
        if secret.len() > 200 {
            return Err(AppError::Unauthorized);
        }
        // A key revoked through another node stops working within the cache's TTL; through
        // this node, at once.
        let hash = fidelis_store::tenancy::hash_key(secret);
        if let Some(p) = self.keys.get(&hash) {
            return Ok(p);
        }
        let key = self
            .store
            .find_key_hashed(&hash)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let scope = Scope::parse(&key.scope).ok_or(AppError::Unauthorized)?;
        let principal = Principal {
            tenant: key.tenant_id,
            key_id: key.id,
            scope,
        };
        self.keys.put(&hash, principal.clone());
        Ok(principal)
    }

    /// Creates the tenant (with default programme) if needed, then a key; returns the secret.
    pub async fn bootstrap_key(
        &self,
        tenant: &str,
        scope: Scope,
        label: Option<&str>,
    ) -> Result<(ApiKeyRecord, String), AppError> {
        let ok = !tenant.is_empty()
            && tenant.len() <= 64
            && tenant
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(AppError::invalid(
                "tenant",
                "must be 1 to 64 characters of a-z, 0-9, - and _",
            ));
        }
        self.store
            .ensure_tenant(tenant, tenant, &ProgramSettings::default(), self.now())
            .await?;
        Ok(self
            .store
            .create_key(tenant, scope.as_str(), label, self.now())
            .await?)
    }

    pub async fn program(&self, p: &Principal) -> Result<(ProgramSettings, i64), AppError> {
        p.can_read("reading the programme")?;
        Ok(self.store.program(&p.tenant).await?)
    }

    /// Replaces the programme's settings; returns them, the new version, and whether the
    /// answer is a replay.
    pub async fn put_program(
        &self,
        p: &Principal,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
    ) -> Result<(ProgramSettings, i64, bool), AppError> {
        p.admin("changing the programme")?;
        settings
            .validate()
            .map_err(|e| AppError::invalid(e.field, e.reason))?;
        let (version, replayed) = self
            .store
            .put_program(&p.tenant, &settings, &p.actor(), idem, self.now())
            .await?;
        self.programs.forget(&p.tenant);
        Ok((settings, version, replayed))
    }

    /// What earning rules may know of the member an event names. An event naming a member who
    /// is not enrolled, and whom it would not enrol, is refused here, before it reaches a
    /// writer: a request that fails inside a group commit makes its whole batch run again.
    async fn facts(
        &self,
        tenant: &str,
        key: &MemberKey,
        settings: &ProgramSettings,
    ) -> Result<MemberFacts, AppError> {
        match self.store.member_facts(tenant, key).await? {
            Some(facts) => Ok(facts),
            None => match fidelis_store::members::not_enrolled(key, settings.auto_enroll) {
                Some(refusal) => Err(refusal.into()),
                None => Ok(MemberFacts::default()),
            },
        }
    }

    /// The facts earning sees for an event, with the tenant's rules that will earn on it: the
    /// member's facts, or the default ones without reading the member when no earner and no
    /// rule can use them (a programme of a base rate alone, the common case, saves a read per
    /// event). Then a member who is not enrolled is refused by the writer instead, with the
    /// same answer, before it writes.
    async fn earning_facts(
        &self,
        tenant: &str,
        key: &MemberKey,
        settings: &ProgramSettings,
        event: Trigger<'_>,
    ) -> Result<(MemberFacts, Arc<fidelis_core::rules::RuleSet>), AppError> {
        let rules = self.rule_set(tenant).await?;
        let scope = EarnScope {
            program: settings,
            event,
            plans_offered: self.plans_offered(tenant).await?,
        };
        if rules.reads_member(&scope) || self.earners.iter().any(|e| e.reads_member(&scope)) {
            return Ok((self.facts(tenant, key, settings).await?, rules));
        }
        Ok((MemberFacts::default(), rules))
    }

    /// Whether the tenant has any plan: fresh to within the cache's TTL of another node's
    /// first plan, and at once after this node's (`note_plan_offered`).
    async fn plans_offered(&self, tenant: &str) -> Result<bool, AppError> {
        if let Some(offered) = self.plans_offered.get(tenant) {
            return Ok(offered);
        }
        let offered = self.store.offers_plans(tenant).await?;
        self.plans_offered.put(tenant, offered);
        Ok(offered)
    }

    pub(crate) fn note_plan_offered(&self, tenant: &str) {
        self.plans_offered.put(tenant, true);
    }

    pub(crate) fn awards(&self, ctx: &EarnContext<'_>) -> Vec<Award> {
        self.earners.iter().flat_map(|e| e.awards(ctx)).collect()
    }

    pub(crate) async fn settings(&self, tenant: &str) -> Result<ProgramSettings, AppError> {
        if let Some(s) = self.programs.get(tenant) {
            return Ok(s);
        }
        let s = self.store.program(tenant).await?.0;
        self.programs.put(tenant, s.clone());
        Ok(s)
    }

    pub async fn create_member(
        &self,
        p: &Principal,
        input: MemberInput,
        idem: Option<IdemKey>,
    ) -> Result<(Member, bool), AppError> {
        p.can_write_events("enrolling members")?;
        let fields = input.validate(self.clock.now())?;
        let (member, replayed) = self
            .store
            .create_member(&p.tenant, fields, idem, self.now())
            .await?;
        if !replayed {
            self.after_enrolment(&p.tenant, &member.id).await;
        }
        Ok((member, replayed))
    }

    pub async fn patch_member(
        &self,
        p: &Principal,
        id: &str,
        input: MemberInput,
        idem: Option<IdemKey>,
    ) -> Result<(Member, bool), AppError> {
        p.can_write_events("changing members")?;
        let fields = input.validate(self.clock.now())?;
        Ok(self
            .store
            .patch_member(&p.tenant, id, fields, idem, self.now())
            .await?)
    }

    pub async fn member(&self, p: &Principal, id: &str) -> Result<Member, AppError> {
        p.can_read("reading members")?;
        Ok(self.store.member(&p.tenant, id).await?)
    }

    pub async fn lookup_member(
        &self,
        p: &Principal,
        by: LookupBy,
        value: &str,
    ) -> Result<Member, AppError> {
        p.can_read("looking up members")?;
        let value = if by == LookupBy::Email {
            value.trim().to_lowercase()
        } else {
            value.trim().to_string()
        };
        self.store
            .find_member(&p.tenant, by, &value)
            .await?
            .ok_or_else(|| AppError::NotFound("member".into()))
    }

    pub async fn list_members(
        &self,
        p: &Principal,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<Member>, AppError> {
        p.can_read("listing members")?;
        Ok(self.store.list_members(&p.tenant, cursor, limit).await?)
    }

    pub async fn purchase(
        &self,
        p: &Principal,
        input: PurchaseInput,
        idem: Option<IdemKey>,
    ) -> Result<(PurchaseOutcome, bool), AppError> {
        p.can_write_events("recording purchases")?;
        let settings = self.settings(&p.tenant).await?;
        let purchase = input.validate(&settings, self.clock.now())?;
        let (member, rules) = self
            .earning_facts(
                &p.tenant,
                &purchase.member,
                &settings,
                Trigger::Purchase(&purchase),
            )
            .await?;
        let ctx = EarnContext {
            program: &settings,
            event: Trigger::Purchase(&purchase),
            member: &member,
            now: self.clock.now(),
        };
        let mut awards = self.awards(&ctx);
        awards.extend(rules.awards(&ctx));
        let (out, replayed) = self
            .store
            .purchase(&p.tenant, purchase, awards, settings, idem, self.now())
            .await?;
        self.after_purchase(&p.tenant, &out, replayed).await;
        Ok((out, replayed))
    }

    pub async fn refund(
        &self,
        p: &Principal,
        input: RefundInput,
        idem: Option<IdemKey>,
    ) -> Result<(RefundOutcome, bool), AppError> {
        p.can_write_events("recording refunds")?;
        let settings = self.settings(&p.tenant).await?;
        let refund = input.validate(&settings, self.clock.now())?;
        let (out, replayed) = self
            .store
            .refund(&p.tenant, refund, settings, idem, self.now())
            .await?;
        self.after_refund(&p.tenant, &out, replayed).await;
        Ok((out, replayed))
    }

    pub async fn custom(
        &self,
        p: &Principal,
        input: CustomInput,
        idem: Option<IdemKey>,
    ) -> Result<(CustomOutcome, bool), AppError> {
        p.can_write_events("recording events")?;
        let settings = self.settings(&p.tenant).await?;
        let event = input.validate(self.clock.now())?;
        // The base rate applies to purchases only; custom events earn through other earners.
        let (member, rules) = self
            .earning_facts(&p.tenant, &event.member, &settings, Trigger::Custom(&event))
            .await?;
        let ctx = EarnContext {
            program: &settings,
            event: Trigger::Custom(&event),
            member: &member,
            now: self.clock.now(),
        };
        let mut awards = self.awards(&ctx);
        awards.extend(rules.awards(&ctx));
        Ok(self
            .store
            .custom(&p.tenant, event, awards, settings, idem, self.now())
            .await?)
    }

    pub async fn adjust(
        &self,
        p: &Principal,
        member: &str,
        input: AdjustmentInput,
        idem: Option<IdemKey>,
    ) -> Result<(AdjustOutcome, bool), AppError> {
        p.admin("adjusting points")?;
        let (points, reason) = input.validate()?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self
            .store
            .adjust(
                &p.tenant,
                member,
                points,
                &reason,
                &p.actor(),
                settings,
                idem,
                self.now(),
            )
            .await?)
    }

    pub async fn balance(&self, p: &Principal, member: &str) -> Result<Balance, AppError> {
        p.can_read("reading balances")?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self.store.balance(&p.tenant, member, settings).await?)
    }

    pub async fn history(
        &self,
        p: &Principal,
        member: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Page<LedgerTxn>, AppError> {
        p.can_read("reading the ledger")?;
        let cursor =
            match cursor {
                None => None,
                Some(c) => Some(c.parse::<i64>().map_err(|_| {
                    AppError::invalid("cursor", "is not a cursor this API returned")
                })?),
            };
        Ok(self.store.history(&p.tenant, member, cursor, limit).await?)
    }

    pub async fn list_keys(&self, p: &Principal) -> Result<Vec<ApiKeyRecord>, AppError> {
        p.admin("listing API keys")?;
        Ok(self.store.list_keys(&p.tenant).await?)
    }

    pub async fn create_key(
        &self,
        p: &Principal,
        scope: &str,
        label: Option<&str>,
    ) -> Result<(ApiKeyRecord, String), AppError> {
        p.admin("creating API keys")?;
        let scope = Scope::parse(scope).ok_or_else(|| {
            AppError::invalid("scope", "must be admin, pos, ecommerce or analytics")
        })?;
        if label.is_some_and(|l| l.chars().count() > 100) {
            return Err(AppError::invalid("label", "must be at most 100 characters"));
        }
        Ok(self
            .store
            .create_key(&p.tenant, scope.as_str(), label, self.now())
            .await?)
    }

    pub async fn revoke_key(&self, p: &Principal, id: &str) -> Result<(), AppError> {
        p.admin("revoking API keys")?;
        self.store.revoke_key(&p.tenant, id, self.now()).await?;
        self.keys.clear();
        Ok(())
    }

    /// Maturation and expiry, for every tenant, as of the clock's now.
    pub async fn run_jobs(&self) -> Result<JobReport, AppError> {
        let report = self.store.run_jobs(self.now()).await?;
        self.rule_jobs(None).await;
        Ok(report)
    }

    /// Maturation and expiry of the caller's tenant, now.
    pub async fn run_jobs_as(&self, p: &Principal) -> Result<JobReport, AppError> {
        p.admin("running jobs")?;
        let report = self.store.run_jobs_for(&p.tenant, self.now()).await?;
        self.rule_jobs(Some(&p.tenant)).await;
        Ok(report)
    }

    /// The ledger's invariants, checked over the caller's tenant.
    pub async fn verify(&self, p: &Principal) -> Result<VerifyReport, AppError> {
        p.admin("verifying the ledger")?;
        Ok(self.store.verify_tenant(&p.tenant).await?)
    }
}
