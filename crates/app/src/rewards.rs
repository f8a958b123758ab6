//! Use cases of the rewards catalogue, redemptions and coupons. The till and the web shop
//! (`pos`, `ecommerce`) validate and burn coupons; guessing codes is limited per key
//! ([`crate::guard`]) and logged.

use crate::error::AppError;
use crate::service::{App, Principal, Scope};
use fidelis_core::event::{LineInput, MAX_ID_LEN, MAX_LINES};
use fidelis_core::money::Money;
use fidelis_core::rewards::{OrderView, RewardInput, normalize_code};
use fidelis_store::IdemKey;
use fidelis_store::model::Page;
use fidelis_store::rewards::{
    CancelOutcome, CouponCheck, CouponQuery, CouponRecord, CouponRedeemed, RedemptionOutcome,
    RewardRecord,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionInput {
    pub reward_id: String,
}

/// `POST /coupons/validate`: the code and, optionally, the order it would be used on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponCheckInput {
    pub code: String,
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub order_total: Option<String>,
    #[serde(default)]
    pub lines: Vec<LineInput>,
}

/// `POST /coupons/{code}/redeem`: the order it is used on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponRedeemInput {
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub order_total: Option<String>,
    #[serde(default)]
    pub lines: Vec<LineInput>,
}

pub(crate) fn id_field(field: &str, v: &str) -> Result<String, AppError> {
    let t = v.trim();
    if t.is_empty() || t.len() > MAX_ID_LEN || t.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            format!("must be 1 to {MAX_ID_LEN} printable characters"),
        ));
    }
    Ok(t.to_string())
}

fn order_view(
    total: &Option<String>,
    lines: &[LineInput],
    currency: fidelis_core::Currency,
) -> Result<OrderView, AppError> {
    let total_minor = total
        .as_deref()
        .map(|t| {
            Money::parse(t, currency)
                .map(|m| m.minor)
                .map_err(|e| AppError::invalid("order_total", e.to_string()))
        })
        .transpose()?;
    if lines.len() > MAX_LINES {
        return Err(AppError::invalid(
            "lines",
            format!("at most {MAX_LINES} lines"),
        ));
    }
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let price = Money::parse(&l.unit_price, currency)
            .map_err(|e| AppError::invalid(format!("lines[{i}].unit_price"), e.to_string()))?;
        if l.quantity <= 0 || l.quantity > fidelis_core::event::MAX_QUANTITY {
            return Err(AppError::invalid(
                format!("lines[{i}].quantity"),
                format!("must be 1 to {}", fidelis_core::event::MAX_QUANTITY),
            ));
        }
        out.push((l.sku.clone(), l.quantity, price.minor));
    }
    Ok(OrderView {
        total_minor,
        lines: out,
    })
}

fn tier_names(settings: &fidelis_core::ProgramSettings) -> Vec<String> {
    settings
        .ladder()
        .map(|l| l.levels.into_iter().map(|l| l.name).collect())
        .unwrap_or_default()
}

impl App {
    fn rewards_now_us(&self) -> i64 {
        self.clock.now().timestamp_micros()
    }

    fn till(p: &Principal, what: &str) -> Result<(), AppError> {
        p.allow(&[Scope::Admin, Scope::Pos, Scope::Ecommerce], what)
    }

    pub async fn create_reward(
        &self,
        p: &Principal,
        input: RewardInput,
        idem: Option<IdemKey>,
    ) -> Result<(RewardRecord, bool), AppError> {
        p.admin("managing rewards")?;
        let settings = self.settings(&p.tenant).await?;
        let def = input
            .validate(settings.currency, &tier_names(&settings))
            .map_err(|e| AppError::invalid(e.field, e.reason))?;
        Ok(self
            .store
            .create_reward(&p.tenant, def, input.stock, idem, self.rewards_now_us())
            .await?)
    }

    pub async fn update_reward(
        &self,
        p: &Principal,
        id: &str,
        input: RewardInput,
        idem: Option<IdemKey>,
    ) -> Result<(RewardRecord, bool), AppError> {
        p.admin("managing rewards")?;
        let settings = self.settings(&p.tenant).await?;
        let def = input
            .validate(settings.currency, &tier_names(&settings))
            .map_err(|e| AppError::invalid(e.field, e.reason))?;
        Ok(self
            .store
            .update_reward(&p.tenant, id, def, input.stock, idem, self.rewards_now_us())
            .await?)
    }

    pub async fn reward(&self, p: &Principal, id: &str) -> Result<RewardRecord, AppError> {
        p.can_read("reading rewards")?;
        Ok(self.store.reward(&p.tenant, id).await?)
    }

    pub async fn list_rewards(
        &self,
        p: &Principal,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<RewardRecord>, AppError> {
        p.can_read("reading rewards")?;
        Ok(self.store.list_rewards(&p.tenant, cursor, limit).await?)
    }

    pub async fn redeem_reward(
        &self,
        p: &Principal,
        member: &str,
        input: RedemptionInput,
        idem: Option<IdemKey>,
    ) -> Result<(RedemptionOutcome, bool), AppError> {
        p.can_write_events("redeeming rewards")?;
        let reward_id = id_field("reward_id", &input.reward_id)?;
        let settings = self.settings(&p.tenant).await?;
        Ok(self
            .store
            .redeem_reward(
                &p.tenant,
                member,
                &reward_id,
                settings,
                idem,
                self.rewards_now_us(),
            )
            .await?)
    }

    pub async fn member_coupons(
        &self,
        p: &Principal,
        member: &str,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<CouponRecord>, AppError> {
        p.can_read("reading coupons")?;
        Ok(self
            .store
            .member_coupons(&p.tenant, member, cursor, limit)
            .await?)
    }

    /// Refuses a key that tried too many unknown codes, until its bucket refills.
    fn refuse_if_guessing(&self, p: &Principal) -> Result<(), AppError> {
        if let Err(secs) = self.guesses.check(&p.key_id, self.rewards_now_us()) {
            tracing::warn!(tenant = %p.tenant, key = %p.key_id, retry_after_secs = secs, "coupon request refused: too many unknown codes from this key");
            return Err(AppError::TooManyRequests {
                detail: format!(
                    "too many unknown coupon codes from this key; try again in {secs} s"
                ),
                retry_after_secs: secs,
            });
        }
        Ok(())
    }

    /// Counts an unknown or malformed code tried by this key.
    fn count_guess(&self, p: &Principal) {
        self.guesses.record(&p.key_id, self.rewards_now_us());
        tracing::warn!(tenant = %p.tenant, key = %p.key_id, "unknown coupon code tried");
    }

    /// Whether a coupon is good for an order (and why not); writes nothing.
    pub async fn validate_coupon(
        &self,
        p: &Principal,
        input: CouponCheckInput,
    ) -> Result<CouponCheck, AppError> {
        Self::till(p, "validating coupons")?;
        self.refuse_if_guessing(p)?;
        let settings = self.settings(&p.tenant).await?;
        let order = order_view(&input.order_total, &input.lines, settings.currency)?;
        let member_id = input
            .member_id
            .as_deref()
            .map(|m| id_field("member_id", m))
            .transpose()?;
        let Ok(code) = normalize_code(&input.code) else {
            self.count_guess(p);
            let r = fidelis_core::rewards::Refusal::Malformed;
            return Ok(CouponCheck {
                valid: false,
                reason: Some(r.code().into()),
                detail: Some(r.message(settings.currency)),
                coupon: None,
                benefit: None,
            });
        };
        let check = self
            .store
            .validate_coupon(
                &p.tenant,
                CouponQuery {
                    code,
                    member_id,
                    order,
                },
                settings,
                self.rewards_now_us(),
            )
            .await?;
        if check.reason.as_deref() == Some("unknown") {
            self.count_guess(p);
        }
        Ok(check)
    }

    /// Burns a coupon at the till. A second redeem is a 409 naming when it was redeemed; the
    /// same request with its Idempotency-Key replays the first answer.
    pub async fn redeem_coupon(
        &self,
        p: &Principal,
        code: &str,
        input: CouponRedeemInput,
        idem: Option<IdemKey>,
    ) -> Result<(CouponRedeemed, bool), AppError> {
        Self::till(p, "redeeming coupons")?;
        self.refuse_if_guessing(p)?;
        let settings = self.settings(&p.tenant).await?;
        let order = order_view(&input.order_total, &input.lines, settings.currency)?;
        let order_id = input
            .order_id
            .as_deref()
            .map(|o| id_field("order_id", o))
            .transpose()?;
        let member_id = input
            .member_id
            .as_deref()
            .map(|m| id_field("member_id", m))
            .transpose()?;
        let Ok(code) = normalize_code(code) else {
            self.count_guess(p);
            return Err(AppError::NotFound("coupon".into()));
        };
        let result = self
            .store
            .redeem_coupon(
                &p.tenant,
                CouponQuery {
                    code,
                    member_id,
                    order,
                },
                order_id,
                &p.actor(),
                settings,
                idem,
                self.rewards_now_us(),
            )
            .await;
        match result {
            Err(fidelis_store::StoreError::NotFound(what)) => {
                self.count_guess(p);
                Err(AppError::NotFound(what))
            }
            other => Ok(other?),
        }
    }

    /// Cancels an unused coupon; its points come back when the programme says so.
    pub async fn cancel_coupon(
        &self,
        p: &Principal,
        code: &str,
        member: Option<&str>,
        idem: Option<IdemKey>,
    ) -> Result<(CancelOutcome, bool), AppError> {
        p.can_write_events("cancelling coupons")?;
        let Ok(code) = normalize_code(code) else {
            return Err(AppError::NotFound("coupon".into()));
        };
        let settings = self.settings(&p.tenant).await?;
        Ok(self
            .store
            .cancel_coupon(
                &p.tenant,
                &code,
                member,
                &p.actor(),
                settings,
                idem,
                self.rewards_now_us(),
            )
            .await?)
    }
}
