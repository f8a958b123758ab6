//! The store's operations in domain terms. Writes take `now` (micros) from the caller's clock
//! and an optional idempotency key; they return `(result, replayed)`.

use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::members::LookupBy;
use crate::model::*;
use crate::runtime::Store;
use crate::verify::VerifyReport;
use fidelis_core::ProgramSettings;
use fidelis_core::earn::Award;
use fidelis_core::event::{Custom, MemberKey, Purchase, Refund};
use fidelis_core::program::ExpiryPolicy;

impl Store {
    /// The writer partition of the member `key` names: its id, so that every write touching
    /// one member's row goes to one writer thread and two writers never wait on each other's
    /// member locks. With one writer (SQLite) nothing needs resolving.
    async fn member_partition(&self, tenant: &str, key: &MemberKey) -> String {
        match key {
            MemberKey::Id(id) => id.clone(),
            MemberKey::ExternalId(_) if self.writer_count() == 1 => String::new(),
            MemberKey::ExternalId(ext) => {
                // Not enrolled yet (or the read failed): the external id keeps its requests
                // together until the member exists.
                match self.member_facts(tenant, key).await {
                    Ok(Some(f)) => f.id.unwrap_or_else(|| ext.clone()),
                    _ => ext.clone(),
                }
            }
        }
    }

    /// The writer partition of a refund: the member of the order it refunds.
    async fn order_partition(&self, tenant: &str, order_id: &str) -> String {
        if self.writer_count() == 1 {
            return String::new();
        }
        let (t, o) = (tenant.to_string(), order_id.to_string());
        let member = self
            .read(move |c| {
                Ok(c.query_one(
                    "SELECT member_id FROM orders WHERE tenant_id = $1 AND order_id = $2",
                    &[t.as_str().into(), o.as_str().into()],
                )?
                .map(|r| r.text(0)))
            })
            .await;
        match member {
            Ok(Some(m)) => m,
            _ => order_id.to_string(),
        }
    }

    pub async fn ensure_tenant(
        &self,
        id: &str,
        name: &str,
        settings: &ProgramSettings,
        now: i64,
    ) -> Result<bool> {
        let (id, name, settings) = (id.to_string(), name.to_string(), settings.clone());
        self.write("", move |c| {
            crate::tenancy::ensure_tenant(c, &id, &name, &settings, now)
        })
        .await
    }

    pub async fn tenant_ids(&self) -> Result<Vec<String>> {
        self.read(crate::tenancy::tenant_ids).await
    }

    pub async fn create_key(
        &self,
        tenant: &str,
        scope: &str,
        label: Option<&str>,
        now: i64,
    ) -> Result<(ApiKeyRecord, String)> {
        let (tenant, scope, label) = (
            tenant.to_string(),
            scope.to_string(),
            label.map(str::to_string),
        );
        self.write("", move |c| {
            crate::tenancy::create_key(c, &tenant, &scope, label.as_deref(), now)
        })
        .await
    }

    /// The live key whose secret is `secret`, if any.
    /// The live key whose secret hashes to `hash` ([`crate::tenancy::hash_key`]).
    pub async fn find_key_hashed(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let hash = hash.to_string();
        self.read(move |c| crate::tenancy::find_key(c, &hash)).await
    }

    pub async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
        let tenant = tenant.to_string();
        self.read(move |c| crate::tenancy::list_keys(c, &tenant))
            .await
    }

    pub async fn revoke_key(&self, tenant: &str, id: &str, now: i64) -> Result<()> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.write("", move |c| {
            crate::tenancy::revoke_key(c, &tenant, &id, now)
        })
        .await
    }

    pub async fn program(&self, tenant: &str) -> Result<(ProgramSettings, i64)> {
        let tenant = tenant.to_string();
        self.read(move |c| crate::tenancy::get_program(c, &tenant))
            .await
    }

    /// Replaces the programme's settings; returns the new version (and whether replayed).
    pub async fn put_program(
        &self,
        tenant: &str,
        settings: &ProgramSettings,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(i64, bool)> {
        if crate::tiers::needs_member_events(settings) {
            // The tenant's history first, a chunk per transaction, not all in the update's.
            self.unmark_member_events(tenant, crate::tiers::UNMARK_CHUNK)
                .await?;
        }
        let (tenant, settings, actor) = (tenant.to_string(), settings.clone(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            crate::tenancy::put_program(c, tenant, &settings, &actor, now)
        })
        .await
    }

    pub async fn create_member(
        &self,
        tenant: &str,
        fields: MemberFields,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(Member, bool)> {
        let tenant = tenant.to_string();
        let part = fields
            .external_id
            .clone()
            .or_else(|| fields.email.clone())
            .unwrap_or_default();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            crate::members::create(c, tenant, &fields, now)
        })
        .await
    }

    pub async fn member(&self, tenant: &str, id: &str) -> Result<Member> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read_row(move |c| {
            crate::members::get_with_row(c, &tenant, &id).map(|(m, row)| (m, Some(row)))
        })
        .await
    }

    pub async fn find_member(
        &self,
        tenant: &str,
        by: LookupBy,
        value: &str,
    ) -> Result<Option<Member>> {
        let (tenant, value) = (tenant.to_string(), value.to_string());
        self.read_row(move |c| {
            crate::members::find(c, &tenant, by, &value).map(|found| match found {
                Some((m, row)) => (Some(m), Some(row)),
                None => (None, None),
            })
        })
        .await
    }

    pub async fn patch_member(
        &self,
        tenant: &str,
        id: &str,
        fields: MemberFields,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(Member, bool)> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let part = id.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            crate::members::patch(c, tenant, &id, &fields, now)
        })
        .await
    }

    pub async fn list_members(
        &self,
        tenant: &str,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<Member>> {
        let tenant = tenant.to_string();
        self.read(move |c| crate::members::list(c, &tenant, cursor.as_deref(), limit))
            .await
    }

    pub async fn purchase(
        &self,
        tenant: &str,
        p: Purchase,
        awards: Vec<Award>,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(PurchaseOutcome, bool)> {
        let tenant = tenant.to_string();
        let part = self.member_partition(&tenant, &p.member).await;
        let job = crate::together::PurchaseJob {
            tenant,
            texts: crate::together::PurchaseTexts::of(&p)?,
            purchase: p,
            awards,
            settings,
            idem,
            now,
        };
        self.write_purchase(&part, job).await
    }

    pub async fn refund(
        &self,
        tenant: &str,
        r: Refund,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RefundOutcome, bool)> {
        let tenant = tenant.to_string();
        let part = self.order_partition(&tenant, &r.order_id).await;
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            crate::events::refund(c, tenant, &r, &settings, now)
        })
        .await
    }

    pub async fn custom(
        &self,
        tenant: &str,
        e: Custom,
        awards: Vec<Award>,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CustomOutcome, bool)> {
        let tenant = tenant.to_string();
        let part = self.member_partition(&tenant, &e.member).await;
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            crate::events::custom(c, tenant, &e, &awards, &settings, now)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn adjust(
        &self,
        tenant: &str,
        member: &str,
        points: i64,
        reason: &str,
        actor: &str,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(AdjustOutcome, bool)> {
        let (tenant, member, reason, actor) = (
            tenant.to_string(),
            member.to_string(),
            reason.to_string(),
            actor.to_string(),
        );
        let part = member.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            crate::ledger::adjust(c, tenant, &member, points, &reason, &actor, &settings, now)
        })
        .await
    }

    pub async fn history(
        &self,
        tenant: &str,
        member: &str,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<LedgerTxn>> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| crate::ledger::history(c, &tenant, &member, cursor, limit))
            .await
    }

    /// Runs maturation and expiry for every tenant until nothing is due at `now`.
    pub async fn run_jobs(&self, now: i64) -> Result<JobReport> {
        let mut report = JobReport::default();
        for tenant in self.tenant_ids().await? {
            report.add(&self.run_jobs_for(&tenant, now).await?);
        }
        Ok(report)
    }

    /// Members whose points an inactivity policy may expire at `now` (none under another
    /// policy), found on a reader: a walk over the tenant's members. The first half of an expiry
    /// round of [`Store::run_jobs_for`]; public, with [`Store::expire_inactive`], so that a test
    /// can act between the halves, as a purchase may in production.
    #[doc(hidden)]
    pub async fn inactive_candidates(&self, tenant: &str, now: i64) -> Result<Vec<String>> {
        let (settings, _) = self.program(tenant).await?;
        Ok(self.inactive_candidates_of(tenant, &settings, now).await?.0)
    }

    /// The second half: on the writer, expires the points of those `candidates` still inactive
    /// at `now`, each checked again there.
    #[doc(hidden)]
    pub async fn expire_inactive(
        &self,
        tenant: &str,
        now: i64,
        candidates: Vec<String>,
    ) -> Result<JobReport> {
        let (settings, _) = self.program(tenant).await?;
        let (_, report) = self
            .jobs_round(tenant, &settings, "expire", now, (candidates, false))
            .await?;
        Ok(report)
    }

    async fn inactive_candidates_of(
        &self,
        tenant: &str,
        settings: &ProgramSettings,
        now: i64,
    ) -> Result<crate::jobs::Candidates> {
        match settings.expiry {
            ExpiryPolicy::Inactivity { months } => {
                let t = tenant.to_string();
                self.read(move |c| crate::jobs::inactive_candidates(c, &t, months, now))
                    .await
            }
            _ => Ok((Vec::new(), false)),
        }
    }

    /// One round of a job (`mature` or `expire`) on the writer: whether more may be due, and
    /// what it did.
    async fn jobs_round(
        &self,
        tenant: &str,
        settings: &ProgramSettings,
        kind: &'static str,
        now: i64,
        inactive: crate::jobs::Candidates,
    ) -> Result<(bool, JobReport)> {
        let (t, s) = (tenant.to_string(), settings.clone());
        self.write("", move |c| {
            let mut r = JobReport::default();
            let more = if kind == "mature" {
                crate::jobs::mature(c, &t, now, &mut r)?
            } else {
                crate::jobs::expire(c, &t, &s, now, &inactive, &mut r)?
            };
            Ok((more, r))
        })
        .await
    }

    /// Runs maturation and expiry for one tenant until nothing is due at `now`.
    pub async fn run_jobs_for(&self, tenant: &str, now: i64) -> Result<JobReport> {
        let mut report = JobReport::default();
        let (settings, _) = self.program(tenant).await?;
        // Maturation first, so a lot that matured and expired by `now` is expired too.
        for kind in ["mature", "expire"] {
            // Each round handles a bounded number of members; stop when one comes back short
            // or made no progress (members held by other nodes are left for their run).
            for _ in 0..10_000 {
                let inactive = if kind == "expire" {
                    self.inactive_candidates_of(tenant, &settings, now).await?
                } else {
                    (Vec::new(), false)
                };
                let (more, part) = self
                    .jobs_round(tenant, &settings, kind, now, inactive)
                    .await?;
                report.add(&part);
                if !more || part.members_touched == 0 {
                    break;
                }
            }
        }
        self.member_value_jobs(tenant, &settings, now, &mut report)
            .await?;
        Ok(report)
    }

    /// Checks the ledger's invariants across every tenant.
    pub async fn verify(&self) -> Result<VerifyReport> {
        self.read(|c| crate::verify::verify(c, "")).await
    }

    /// Checks the ledger's invariants of one tenant.
    pub async fn verify_tenant(&self, tenant: &str) -> Result<VerifyReport> {
        let tenant = tenant.to_string();
        self.read(move |c| crate::verify::verify(c, &tenant)).await
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Unprocessable(e.to_string())
    }
}
