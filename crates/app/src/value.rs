//! Use cases of member value beyond the catalogue: tiers (configuration and a member's tier),
//! store credit, transfers and donations of points, the programme's totals, paid plans and
//! subscriptions.

use crate::error::AppError;
use crate::rewards::id_field;
use crate::service::{App, Principal, Scope};
use fidelis_core::membership::{PlanInput, SubscriptionEvent};
use fidelis_core::money::{Currency, Money};
use fidelis_core::tiers::TierConfig;
use fidelis_core::transfers::MAX_DONATION_POINTS;
use fidelis_store::IdemKey;
use fidelis_store::credit::{CreditSpent, CreditView};
use fidelis_store::membership::{PlanRecord, SubscriptionRecord};
use fidelis_store::model::Page;
use fidelis_store::tiers::TierView;
use fidelis_store::transfers::{DonationOutcome, ProgramTotals, TransferOutcome};
use serde::Deserialize;

/// Longest reason of a transfer, and name of a charity.
pub const MAX_TEXT_LEN: usize = 200;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditSpendInput {
    /// A decimal amount ("12.50") in the programme's currency.
    pub amount: String,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferInput {
    pub to_member_id: String,
    pub points: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DonationInput {
    pub points: i64,
    pub charity: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    pub plan_id: String,
    pub event: SubscriptionEvent,
    /// RFC 3339: the end of the paid period (subscribe, renew).
    #[serde(default)]
    pub period_end: Option<String>,
}

fn text(field: &str, v: &str) -> Result<String, AppError> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > MAX_TEXT_LEN || t.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            format!("must be 1 to {MAX_TEXT_LEN} printable characters"),
        ));
    }
    Ok(t.to_string())
}

fn positive_points(v: i64) -> Result<i64, AppError> {
    if v <= 0 || v > MAX_DONATION_POINTS {
        return Err(AppError::invalid(
            "points",
            format!("must be 1 to {MAX_DONATION_POINTS}"),
        ));
    }
    Ok(v)
}

impl App {
    fn value_now_us(&self) -> i64 {
        self.clock.now().timestamp_micros()
    }

    /// The programme's tiers (`null` when it has none).
    pub async fn tiers(&self, p: &Principal) -> Result<Option<TierConfig>, AppError> {
        p.can_read("reading tiers")?;
        Ok(self.settings(&p.tenant).await?.tiers)
    }

    /// Replaces (or with `None` removes) the programme's tiers: a new programme version.
    pub async fn put_tiers(
        &self,
        p: &Principal,
        tiers: Option<TierConfig>,
        idem: Option<IdemKey>,
    ) -> Result<(Option<TierConfig>, i64, bool), AppError> {
        p.admin("changing tiers")?;
        let (mut settings, _) = self.store.program(&p.tenant).await?;
        settings.tiers = tiers;
        let (settings, version, replayed) = self.put_program(p, settings, idem).await?;
        Ok((settings.tiers, version, replayed))
    }

    pub async fn member_tier(&self, p: &Principal, member: &str) -> Result<TierView, AppError> {
        p.can_read("reading tiers")?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self
            .store
            .member_tier(&p.tenant, member, settings, self.value_now_us())
            .await?)
    }

    pub async fn member_credit(
        &self,
        p: &Principal,
        member: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<CreditView, AppError> {
        p.can_read("reading store credit")?;
        let cursor = cursor
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| AppError::invalid("cursor", "is not a cursor this API returned"))
            })
            .transpose()?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self
            .store
            .member_credit(&p.tenant, member, settings, cursor, limit)
            .await?)
    }

    pub async fn spend_credit(
        &self,
        p: &Principal,
        member: &str,
        input: CreditSpendInput,
        idem: Option<IdemKey>,
    ) -> Result<(CreditSpent, bool), AppError> {
        p.allow(
            &[Scope::Admin, Scope::Pos, Scope::Ecommerce],
            "spending store credit",
        )?;
        let settings = self.settings(&p.tenant).await?;
        if let Some(c) = &input.currency {
            let c = Currency::parse(c).map_err(|e| AppError::invalid("currency", e.to_string()))?;
            if c != settings.currency {
                return Err(AppError::invalid(
                    "currency",
                    format!("store credit is in {}", settings.currency),
                ));
            }
        }
        let amount = Money::parse(&input.amount, settings.currency)
            .map_err(|e| AppError::invalid("amount", e.to_string()))?;
        if amount.minor == 0 {
            return Err(AppError::invalid("amount", "must be greater than zero"));
        }
        let order_id = input
            .order_id
            .as_deref()
            .map(|o| id_field("order_id", o))
            .transpose()?;
        Ok(self
            .store
            .spend_credit(
                &p.tenant,
                member,
                amount.minor,
                order_id,
                &p.actor(),
                settings,
                idem,
                self.value_now_us(),
            )
            .await?)
    }

    pub async fn transfer_points(
        &self,
        p: &Principal,
        member: &str,
        input: TransferInput,
        idem: Option<IdemKey>,
    ) -> Result<(TransferOutcome, bool), AppError> {
        p.can_write_events("transferring points")?;
        let to = id_field("to_member_id", &input.to_member_id)?;
        let points = positive_points(input.points)?;
        let reason = text("reason", &input.reason)?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self
            .store
            .transfer_points(
                &p.tenant,
                member,
                &to,
                points,
                &reason,
                &p.actor(),
                settings,
                idem,
                self.value_now_us(),
            )
            .await?)
    }

    pub async fn donate_points(
        &self,
        p: &Principal,
        member: &str,
        input: DonationInput,
        idem: Option<IdemKey>,
    ) -> Result<(DonationOutcome, bool), AppError> {
        p.can_write_events("donating points")?;
        let points = positive_points(input.points)?;
        let charity = text("charity", &input.charity)?;
        Ok(self
            .store
            .donate_points(
                &p.tenant,
                member,
                points,
                &charity,
                &p.actor(),
                idem,
                self.value_now_us(),
            )
            .await?)
    }

    pub async fn program_totals(&self, p: &Principal) -> Result<ProgramTotals, AppError> {
        p.allow(
            &[Scope::Admin, Scope::Analytics],
            "reading the programme's totals",
        )?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self.store.program_totals(&p.tenant, settings).await?)
    }

    pub async fn put_plan(
        &self,
        p: &Principal,
        id: Option<&str>,
        input: PlanInput,
        idem: Option<IdemKey>,
    ) -> Result<(PlanRecord, bool), AppError> {
        p.admin("managing plans")?;
        let settings = self.settings(&p.tenant).await?;
        let def = input
            .validate(settings.currency)
            .map_err(|e| AppError::invalid(e.field, e.reason))?;
        if let Some(r) = &def.monthly_reward_id {
            // The perk must name a reward of this catalogue.
            self.store.reward(&p.tenant, r).await.map_err(|_| {
                AppError::invalid(
                    "monthly_reward_id",
                    format!("no reward `{r}` in the catalogue"),
                )
            })?;
        }
        let out = self
            .store
            .put_plan(&p.tenant, id, def, idem, self.value_now_us())
            .await?;
        self.note_plan_offered(&p.tenant);
        Ok(out)
    }

    pub async fn plan(&self, p: &Principal, id: &str) -> Result<PlanRecord, AppError> {
        p.can_read("reading plans")?;
        Ok(self.store.plan(&p.tenant, id).await?)
    }

    pub async fn plans(&self, p: &Principal) -> Result<Page<PlanRecord>, AppError> {
        p.can_read("reading plans")?;
        Ok(self.store.plans(&p.tenant).await?)
    }

    /// Records a subscription event from the retailer's billing.
    pub async fn subscription_event(
        &self,
        p: &Principal,
        member: &str,
        input: SubscriptionInput,
        idem: Option<IdemKey>,
    ) -> Result<(SubscriptionRecord, bool), AppError> {
        p.can_write_events("recording subscriptions")?;
        let plan_id = id_field("plan_id", &input.plan_id)?;
        let period_end = input
            .period_end
            .as_deref()
            .map(|t| {
                fidelis_core::time::parse(t)
                    .map(|t| t.timestamp_micros())
                    .ok_or_else(|| {
                        AppError::invalid(
                            "period_end",
                            "must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
                        )
                    })
            })
            .transpose()?;
        Ok(self
            .store
            .subscription_event(
                &p.tenant,
                member,
                &plan_id,
                input.event,
                period_end,
                &p.actor(),
                idem,
                self.value_now_us(),
            )
            .await?)
    }

    pub async fn subscription(
        &self,
        p: &Principal,
        member: &str,
    ) -> Result<Option<SubscriptionRecord>, AppError> {
        p.can_read("reading subscriptions")?;
        Ok(self
            .store
            .subscription(&p.tenant, member, self.value_now_us())
            .await?)
    }
}
