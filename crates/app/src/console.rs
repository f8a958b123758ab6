//! The admin console's use cases: admin users and their roles, sign-in and sessions, the
//! dashboard, member search, branding, and console actions on API keys. Roles decide what a
//! console user may do ([`Role::can`]); the calls into the other use cases then run as a
//! [`Principal`] of scope admin (analysts: analytics, so the API's own checks refuse writes too).

use crate::error::AppError;
use crate::secrets::{
    check_password, decoy_hash, generate_password, hash_password, new_token, token_hash,
    verify_password,
};
use crate::service::{App, Principal, Scope};
use fidelis_store::dashboard::{DashboardFigures, MemberFilter, MemberRows};
use fidelis_store::model::ApiKeyRecord;
use fidelis_store::web::{AdminUser, Branding, BrandingSettings, DeletionRequest, WebSession};

/// How long a console sign-in lasts.
pub const ADMIN_SESSION_HOURS: i64 = 12;
/// Largest logo accepted, as a data URL.
pub const MAX_LOGO_CHARS: usize = 160 * 1024;
pub const MAX_BRAND_TEXT_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, including API keys and console users.
    Owner,
    /// The programme: settings, rules, campaigns, tiers, rewards, branding; members.
    Marketer,
    /// Members: look-up, adjustments, coupons. No settings.
    Support,
    /// Reads everything, changes nothing.
    Analyst,
}

/// What a console action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    View,
    AdjustPoints,
    ManageProgramme,
    ManageKeys,
    ManageUsers,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "marketer" => Some(Role::Marketer),
            "support" => Some(Role::Support),
            "analyst" => Some(Role::Analyst),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Marketer => "marketer",
            Role::Support => "support",
            Role::Analyst => "analyst",
        }
    }
    pub fn can(&self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Owner => true,
            Role::Marketer => matches!(p, View | AdjustPoints | ManageProgramme),
            Role::Support => matches!(p, View | AdjustPoints),
            Role::Analyst => p == View,
        }
    }
}

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub user: AdminUser,
    pub role: Role,
    /// Runs the other use cases on the user's behalf; the audit trail names `user:<id>`.
    pub principal: Principal,
    /// The anti-forgery token every form of this session must carry.
    pub csrf: String,
}

impl AdminSession {
    pub fn tenant(&self) -> &str {
        &self.principal.tenant
    }
    pub fn require(&self, p: Permission) -> Result<(), AppError> {
        if self.role.can(p) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "the {} role cannot do this",
                self.role.as_str()
            )))
        }
    }
    pub fn actor(&self) -> String {
        self.principal.key_id.clone()
    }
}

fn normalize_email(email: &str) -> Result<String, AppError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.contains(char::is_whitespace)
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        });
    if ok {
        Ok(e)
    } else {
        Err(AppError::invalid("email", "is not an e-mail address"))
    }
}

fn check_color(field: &str, v: &str) -> Result<String, AppError> {
    let v = v.trim();
    let ok = v.len() == 7 && v.starts_with('#') && v[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(v.to_lowercase())
    } else {
        Err(AppError::invalid(field, "must be a colour such as #1f6f5c"))
    }
}

fn check_text(field: &str, v: &str, max: usize) -> Result<String, AppError> {
    let v = v.trim();
    if v.chars().count() > max || v.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
        return Err(AppError::invalid(
            field,
            format!("must be at most {max} printable characters"),
        ));
    }
    Ok(v.to_string())
}

/// Image types a logo may be; SVG is refused because it can carry scripts.
pub const LOGO_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

fn check_logo(v: &str) -> Result<(), AppError> {
    let ok = v.len() <= MAX_LOGO_CHARS
        && LOGO_TYPES
            .iter()
            .any(|t| v.starts_with(&format!("data:{t};base64,")))
        && v.split_once(',').is_some_and(|(_, b)| {
            b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::invalid(
            "logo",
            format!(
                "must be a PNG, JPEG, GIF or WebP image of at most {} KiB",
                MAX_LOGO_CHARS * 3 / 4 / 1024
            ),
        ))
    }
}

impl App {
    fn micros(&self) -> i64 {
        self.clock.now().timestamp_micros()
    }

    /// Creates a console user (and the tenant, if new). Without a password one is generated
    /// and returned. With `replace`, an existing user of that e-mail gets the role and password.
    pub async fn create_admin_user(
        &self,
        tenant: &str,
        email: &str,
        role: Role,
        password: Option<&str>,
        replace: bool,
        actor: &str,
    ) -> Result<(AdminUser, Option<String>), AppError> {
        let email = normalize_email(email)?;
        let generated = match password {
            Some(p) => {
                check_password("password", p)?;
                None
            }
            None => Some(generate_password()),
        };
        let password =
            password.map_or_else(|| generated.clone().unwrap_or_default(), str::to_string);
        self.ensure_tenant_exists(tenant).await?;
        let hash = hash_password(&password)?;
        let user = self
            .store
            .put_admin_user(
                tenant,
                &email,
                role.as_str(),
                &hash,
                replace,
                actor,
                self.micros(),
            )
            .await?;
        Ok((user, generated))
    }

    async fn ensure_tenant_exists(&self, tenant: &str) -> Result<(), AppError> {
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
        let defaults = fidelis_core::ProgramSettings::default();
        self.store
            .ensure_tenant(tenant, tenant, &defaults, self.micros())
            .await?;
        Ok(())
    }

    /// A console user of the caller's tenant, added by an owner.
    pub async fn add_admin_user(
        &self,
        s: &AdminSession,
        email: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<(AdminUser, Option<String>), AppError> {
        s.require(Permission::ManageUsers)?;
        self.create_admin_user(s.tenant(), email, role, password, false, &s.actor())
            .await
    }

    pub async fn admin_users(&self, s: &AdminSession) -> Result<Vec<AdminUser>, AppError> {
        s.require(Permission::ManageUsers)?;
        Ok(self.store.admin_users(s.tenant()).await?)
    }

    /// Signs a console user in; returns the session's token (for the cookie) and the session.
    /// A wrong e-mail or password is the same `Unauthorized`, after the same work.
    pub async fn admin_sign_in(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
    ) -> Result<(String, AdminSession), AppError> {
        let email = email.trim().to_lowercase();
        let found = self
            .store
            .admin_user_by_email(tenant.trim(), &email)
            .await?;
        let Some((user, hash)) = found else {
            verify_password(password, decoy_hash());
            return Err(AppError::Unauthorized);
        };
        if !verify_password(password, &hash) {
            return Err(AppError::Unauthorized);
        }
        let token = new_token();
        let session = WebSession {
            tenant_id: user.tenant_id.clone(),
            kind: "admin".into(),
            subject: user.id.clone(),
            csrf: new_token(),
            expires_at: self.micros() + ADMIN_SESSION_HOURS * 3_600_000_000,
        };
        self.store
            .create_session(&token_hash(&token), session.clone(), self.micros())
            .await?;
        let s = self.admin_from(user, session.csrf)?;
        Ok((token, s))
    }

    fn admin_from(&self, user: AdminUser, csrf: String) -> Result<AdminSession, AppError> {
        let role = Role::parse(&user.role).ok_or(AppError::Unauthorized)?;
        let scope = if role == Role::Analyst {
            Scope::Analytics
        } else {
            Scope::Admin
        };
        Ok(AdminSession {
            principal: Principal {
                tenant: user.tenant_id.clone(),
                key_id: format!("user:{}", user.id),
                scope,
            },
            user,
            role,
            csrf,
        })
    }

    /// The console session a cookie's token names, if live.
    pub async fn admin_session(&self, token: &str) -> Result<AdminSession, AppError> {
        if token.len() > 100 {
            return Err(AppError::Unauthorized);
        }
        let s = self
            .store
            .session(&token_hash(token), self.micros())
            .await?
            .filter(|s| s.kind == "admin")
            .ok_or(AppError::Unauthorized)?;
        let user = self
            .store
            .admin_user(&s.tenant_id, &s.subject)
            .await?
            .ok_or(AppError::Unauthorized)?;
        self.admin_from(user, s.csrf)
    }

    /// Ends a session (console or portal).
    pub async fn end_session(&self, token: &str) -> Result<(), AppError> {
        Ok(self.store.delete_session(&token_hash(token)).await?)
    }

    pub async fn dashboard(
        &self,
        s: &AdminSession,
        days: i64,
    ) -> Result<DashboardFigures, AppError> {
        s.require(Permission::View)?;
        Ok(self
            .store
            .dashboard(s.tenant(), self.micros(), days)
            .await?)
    }

    pub async fn search_members(
        &self,
        s: &AdminSession,
        query: &str,
        filter: MemberFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<MemberRows, AppError> {
        s.require(Permission::View)?;
        if query.chars().count() > 200 {
            return Err(AppError::invalid("q", "must be at most 200 characters"));
        }
        Ok(self
            .store
            .search_members(s.tenant(), query, filter, cursor, limit, self.micros())
            .await?)
    }

    /// The tenant's branding, with defaults for what was never set.
    pub async fn branding(&self, tenant: &str) -> Result<Branding, AppError> {
        let mut b = self.store.branding(tenant).await?.unwrap_or_default();
        let s = &mut b.settings;
        if s.display_name.is_empty() {
            s.display_name = tenant.to_string();
        }
        if s.primary_color.is_empty() {
            s.primary_color = "#1f5f8b".into();
        }
        if s.accent_color.is_empty() {
            s.accent_color = "#e4a11b".into();
        }
        Ok(b)
    }

    /// Replaces the branding. `logo`: a new data URL, or `None` to keep the current one
    /// (`remove_logo` drops it).
    pub async fn put_branding(
        &self,
        s: &AdminSession,
        settings: BrandingSettings,
        logo: Option<String>,
        remove_logo: bool,
    ) -> Result<(), AppError> {
        s.require(Permission::ManageProgramme)?;
        let display_name = check_text("display_name", &settings.display_name, 80)?;
        if display_name.is_empty() {
            return Err(AppError::invalid("display_name", "is required"));
        }
        let clean = BrandingSettings {
            display_name,
            primary_color: check_color("primary_color", &settings.primary_color)?,
            accent_color: check_color("accent_color", &settings.accent_color)?,
            welcome_title: check_text("welcome_title", &settings.welcome_title, 120)?,
            welcome_text: check_text("welcome_text", &settings.welcome_text, MAX_BRAND_TEXT_CHARS)?,
            footer_text: check_text("footer_text", &settings.footer_text, MAX_BRAND_TEXT_CHARS)?,
        };
        let logo = logo.filter(|l| !l.trim().is_empty());
        if let Some(l) = &logo {
            check_logo(l)?;
        }
        Ok(self
            .store
            .put_branding(
                s.tenant(),
                &clean,
                logo,
                remove_logo,
                &s.actor(),
                self.micros(),
            )
            .await?)
    }

    pub async fn deletion_requests(
        &self,
        s: &AdminSession,
        member: Option<&str>,
    ) -> Result<Vec<DeletionRequest>, AppError> {
        s.require(Permission::View)?;
        Ok(self.store.deletion_requests(s.tenant(), member).await?)
    }

    /// Creates an API key from the console (owners), audited; returns the secret, shown once.
    pub async fn console_create_key(
        &self,
        s: &AdminSession,
        scope: &str,
        label: Option<&str>,
    ) -> Result<(ApiKeyRecord, String), AppError> {
        s.require(Permission::ManageKeys)?;
        let (record, secret) = self.create_key(&s.principal, scope, label).await?;
        let detail =
            serde_json::json!({ "scope": record.scope, "label": record.label }).to_string();
        self.store
            .audit(
                s.tenant(),
                &s.actor(),
                "api_key.create",
                Some(&record.id),
                &detail,
                self.micros(),
            )
            .await?;
        Ok((record, secret))
    }

    pub async fn console_revoke_key(&self, s: &AdminSession, id: &str) -> Result<(), AppError> {
        s.require(Permission::ManageKeys)?;
        self.revoke_key(&s.principal, id).await?;
        self.store
            .audit(
                s.tenant(),
                &s.actor(),
                "api_key.revoke",
                Some(id),
                "{}",
                self.micros(),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_their_names_say() {
        use Permission::*;
        for p in [View, AdjustPoints, ManageProgramme, ManageKeys, ManageUsers] {
            assert!(Role::Owner.can(p));
        }
        assert!(Role::Marketer.can(ManageProgramme) && !Role::Marketer.can(ManageKeys));
        assert!(Role::Support.can(AdjustPoints) && !Role::Support.can(ManageProgramme));
        assert!(Role::Analyst.can(View) && !Role::Analyst.can(AdjustPoints));
        for r in ["owner", "marketer", "support", "analyst"] {
            assert_eq!(Role::parse(r).map(|r| r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn logos_must_be_raster_data_urls_within_the_limit() {
        assert!(check_logo("data:image/png;base64,iVBORw0KGgo=").is_ok());
        assert!(check_logo("data:image/svg+xml;base64,PHN2Zz4=").is_err());
        assert!(check_logo("https://example.com/logo.png").is_err());
        assert!(check_logo("data:image/png;base64,<script>").is_err());
        let big = format!("data:image/png;base64,{}", "A".repeat(MAX_LOGO_CHARS));
        assert!(check_logo(&big).is_err());
    }

    #[test]
    fn colours_are_six_hex_digits() {
        assert_eq!(check_color("c", "#1F6F5C").ok(), Some("#1f6f5c".into()));
        assert!(check_color("c", "red").is_err());
        assert!(check_color("c", "#12345g").is_err());
        assert!(check_color("c", "#fff").is_err());
    }
}
