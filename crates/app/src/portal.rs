//! The member portal's use cases: sign-up with consents, sign-in by password or by a magic
//! link, the member's own session, profile and consents, export of their data, and deletion
//! requests. A [`MemberSession`] only ever names its own member: every portal call takes the
//! member from it, never from what the browser sends.

use crate::error::AppError;
use crate::inputs::{ConsentInput, MemberInput};
use crate::secrets::{
    check_password, decoy_hash, hash_password, new_token, token_hash, verify_password,
};
use crate::service::{App, Principal, Scope};
use fidelis_store::LookupBy;
use fidelis_store::model::Member;
use fidelis_store::web::WebSession;

pub const MEMBER_SESSION_DAYS: i64 = 30;
pub const MAGIC_LINK_MINUTES: i64 = 15;
/// Ledger transactions an export includes at most (newest first).
pub const MAX_EXPORT_TXNS: usize = 20_000;
/// The consents the portal asks for at sign-up and in the profile.
pub const PORTAL_CONSENTS: [&str; 2] = ["marketing_email", "analytics"];

/// A signed-in member of one tenant.
#[derive(Debug, Clone)]
pub struct MemberSession {
    pub tenant: String,
    pub member_id: String,
    pub csrf: String,
    /// Runs the other use cases for this member only; the audit trail names `member:<id>`.
    pub principal: Principal,
}

#[derive(Debug, Clone, Default)]
pub struct SignUp {
    pub name: String,
    pub email: String,
    /// Optional: without one the member signs in by e-mailed link.
    pub password: Option<String>,
    pub marketing_email: bool,
    pub analytics: bool,
}

fn consents(marketing_email: bool, analytics: bool, source: &str) -> Vec<ConsentInput> {
    PORTAL_CONSENTS
        .iter()
        .zip([marketing_email, analytics])
        .map(|(purpose, granted)| ConsentInput {
            purpose: (*purpose).to_string(),
            granted,
            at: None,
            source: source.to_string(),
        })
        .collect()
}

impl App {
    fn portal_principal(tenant: &str, who: &str) -> Principal {
        Principal {
            tenant: tenant.to_string(),
            key_id: who.to_string(),
            scope: Scope::Ecommerce,
        }
    }

    async fn open_member_session(
        &self,
        tenant: &str,
        member_id: &str,
    ) -> Result<(String, MemberSession), AppError> {
        let now = self.clock.now().timestamp_micros();
        let token = new_token();
        let s = WebSession {
            tenant_id: tenant.to_string(),
            kind: "member".into(),
            subject: member_id.to_string(),
            csrf: new_token(),
            expires_at: now + MEMBER_SESSION_DAYS * 86_400_000_000,
        };
        self.store
            .create_session(&token_hash(&token), s.clone(), now)
            .await?;
        Ok((token, self.member_session_from(s)))
    }

    fn member_session_from(&self, s: WebSession) -> MemberSession {
        MemberSession {
            principal: Self::portal_principal(&s.tenant_id, &format!("member:{}", s.subject)),
            tenant: s.tenant_id,
            member_id: s.subject,
            csrf: s.csrf,
        }
    }

    /// True when the tenant exists (the portal answers 404 otherwise).
    pub async fn tenant_exists(&self, tenant: &str) -> Result<bool, AppError> {
        if tenant.len() > 64 {
            return Ok(false);
        }
        Ok(self.store.program(tenant).await.is_ok())
    }

    /// Enrols a member from the portal with their consents (recorded with time and source
    /// `portal`), sets their password if given, and signs them in.
    pub async fn member_sign_up(
        &self,
        tenant: &str,
        input: SignUp,
    ) -> Result<(String, MemberSession, Member), AppError> {
        if !self.tenant_exists(tenant).await? {
            return Err(AppError::NotFound(format!("tenant `{tenant}`")));
        }
        if input.name.trim().is_empty() {
            return Err(AppError::invalid("name", "is required"));
        }
        if let Some(p) = &input.password {
            check_password("password", p)?;
        }
        let p = Self::portal_principal(tenant, "portal:signup");
        let fields = MemberInput {
            name: Some(input.name.clone()),
            email: Some(input.email.clone()),
            consents: Some(consents(input.marketing_email, input.analytics, "portal")),
            ..Default::default()
        };
        let (member, _) = self
            .create_member(&p, fields, None)
            .await
            .map_err(|e| match e {
                AppError::Conflict(_) => AppError::Conflict(
                    "an account already uses this e-mail; sign in instead".into(),
                ),
                other => other,
            })?;
        if let Some(pw) = &input.password {
            let hash = hash_password(pw)?;
            self.store
                .set_member_password(
                    tenant,
                    &member.id,
                    &hash,
                    self.clock.now().timestamp_micros(),
                )
                .await?;
        }
        let (token, s) = self.open_member_session(tenant, &member.id).await?;
        Ok((token, s, member))
    }

    /// Signs a member in with their e-mail and password.
    pub async fn member_sign_in(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
    ) -> Result<(String, MemberSession), AppError> {
        let email = email.trim().to_lowercase();
        let member = self
            .store
            .find_member(tenant, LookupBy::Email, &email)
            .await?;
        let hash = match &member {
            Some(m) => self.store.member_password(tenant, &m.id).await?,
            None => None,
        };
        match (member, hash) {
            (Some(m), Some(h)) if verify_password(password, &h) => {
                self.open_member_session(tenant, &m.id).await
            }
            (_, None) => {
                verify_password(password, decoy_hash());
                Err(AppError::Unauthorized)
            }
            _ => Err(AppError::Unauthorized),
        }
    }

    /// Makes a single-use sign-in link token for the member with this e-mail, if there is one.
    /// The caller sends (or logs) it; it says the same to the browser either way.
    pub async fn request_magic_link(
        &self,
        tenant: &str,
        email: &str,
    ) -> Result<Option<(Member, String)>, AppError> {
        let email = email.trim().to_lowercase();
        let Some(member) = self
            .store
            .find_member(tenant, LookupBy::Email, &email)
            .await?
        else {
            return Ok(None);
        };
        let now = self.clock.now().timestamp_micros();
        let token = new_token();
        self.store
            .create_magic_link(
                tenant,
                &member.id,
                &token_hash(&token),
                now + MAGIC_LINK_MINUTES * 60_000_000,
                now,
            )
            .await?;
        Ok(Some((member, token)))
    }

    /// Uses a magic link (once, before it expires) and signs its member in.
    pub async fn use_magic_link(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<(String, MemberSession), AppError> {
        if token.len() > 100 {
            return Err(AppError::Unauthorized);
        }
        let now = self.clock.now().timestamp_micros();
        let member = self
            .store
            .use_magic_link(tenant, &token_hash(token), now)
            .await?
            .ok_or(AppError::Unauthorized)?;
        self.open_member_session(tenant, &member).await
    }

    /// The member session a cookie's token names, if live and of this tenant.
    pub async fn member_session(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<MemberSession, AppError> {
        if token.len() > 100 {
            return Err(AppError::Unauthorized);
        }
        let now = self.clock.now().timestamp_micros();
        let s = self
            .store
            .session(&token_hash(token), now)
            .await?
            .filter(|s| s.kind == "member" && s.tenant_id == tenant)
            .ok_or(AppError::Unauthorized)?;
        Ok(self.member_session_from(s))
    }

    pub async fn my_member(&self, s: &MemberSession) -> Result<Member, AppError> {
        self.member(&s.principal, &s.member_id).await
    }

    /// Changes the member's name and portal consents (recorded with time and source `portal`).
    pub async fn update_my_profile(
        &self,
        s: &MemberSession,
        name: &str,
        marketing_email: bool,
        analytics: bool,
    ) -> Result<Member, AppError> {
        if name.trim().is_empty() {
            return Err(AppError::invalid("name", "is required"));
        }
        let input = MemberInput {
            name: Some(name.to_string()),
            consents: Some(consents(marketing_email, analytics, "portal")),
            ..Default::default()
        };
        Ok(self
            .patch_member(&s.principal, &s.member_id, input, None)
            .await?
            .0)
    }

    /// Everything held on the member: record, consents, balance, ledger, deletion requests.
    pub async fn export_my_data(&self, s: &MemberSession) -> Result<serde_json::Value, AppError> {
        let member = self.my_member(s).await?;
        let balance = self.balance(&s.principal, &s.member_id).await?;
        let mut ledger = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .history(
                    &s.principal,
                    &s.member_id,
                    cursor.as_deref(),
                    fidelis_store::MAX_PAGE,
                )
                .await?;
            ledger.extend(page.items);
            match page.next_cursor {
                Some(c) if ledger.len() < MAX_EXPORT_TXNS => cursor = Some(c),
                _ => break,
            }
        }
        let deletion = self
            .store
            .deletion_requests(&s.tenant, Some(&s.member_id))
            .await?;
        Ok(serde_json::json!({
            "exported_at": fidelis_core::time::format(self.clock.now()),
            "tenant": s.tenant,
            "member": member,
            "balance": balance,
            "ledger": ledger,
            "deletion_requests": deletion,
        }))
    }

    /// Records the member's request to be erased; the operator carries it out.
    pub async fn request_my_deletion(&self, s: &MemberSession) -> Result<(), AppError> {
        Ok(self
            .store
            .request_deletion(
                &s.tenant,
                &s.member_id,
                "portal",
                self.clock.now().timestamp_micros(),
            )
            .await?)
    }
}
