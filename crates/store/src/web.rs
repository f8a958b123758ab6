//! What the admin console and the member portal keep: admin users (with an Argon2 hash made by
//! the caller), sessions and magic links (stored as SHA-256 hashes of their random tokens, so a
//! copy of the database lets nobody in), each tenant's branding, optional member passwords and
//! members' deletion requests. Migration 4.

use crate::conn::{Conn, DbErrorKind, Row};
use crate::error::{Result, StoreError};
use crate::ledger::ts;
use crate::runtime::Store;
use serde::{Deserialize, Serialize};

pub(crate) const WEB: &str = r#"
CREATE TABLE admin_users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX admin_users_by_email ON admin_users (tenant_id, email);
CREATE TABLE web_sessions (
    hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);
CREATE TABLE magic_links (
    hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE branding (
    tenant_id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    logo TEXT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE member_passwords (
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, member_id)
);
CREATE TABLE deletion_requests (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    source TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    handled_at BIGINT
);
CREATE INDEX deletion_requests_by_tenant ON deletion_requests (tenant_id, id);
CREATE INDEX txns_by_time ON txns (tenant_id, created_at);
CREATE INDEX members_by_created ON members (tenant_id, created_at, id);
"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    /// `owner`, `marketer`, `support` or `analyst`.
    pub role: String,
    pub created_at: String,
}

/// A signed-in browser: an admin user or a member of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub tenant_id: String,
    /// `admin` or `member`.
    pub kind: String,
    /// The admin user's id or the member's id.
    pub subject: String,
    /// The session's anti-forgery token, which every form it posts must carry.
    pub csrf: String,
    pub expires_at: i64,
}

/// How the portal looks: the retailer's name, colours and texts, and its logo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrandingSettings {
    pub display_name: String,
    /// `#rrggbb`.
    pub primary_color: String,
    pub accent_color: String,
    pub welcome_title: String,
    pub welcome_text: String,
    pub footer_text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    pub settings: BrandingSettings,
    /// A `data:image/...;base64,...` URL, or none.
    pub logo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRequest {
    pub id: i64,
    pub member_id: String,
    pub source: String,
    pub requested_at: String,
    pub handled: bool,
}

fn audit(
    c: &mut dyn Conn,
    tenant: &str,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    detail: &str,
    now: i64,
) -> Result<()> {
    c.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[tenant.into(), actor.into(), action.into(), subject.into(), detail.into(), now.into()],
    )?;
    Ok(())
}

const USER_COLUMNS: &str = "id, tenant_id, email, role, created_at";

fn user(r: &Row) -> AdminUser {
    AdminUser {
        id: r.text(0),
        tenant_id: r.text(1),
        email: r.text(2),
        role: r.text(3),
        created_at: ts(r.int(4)),
    }
}

fn session(r: &Row) -> WebSession {
    WebSession {
        tenant_id: r.text(0),
        kind: r.text(1),
        subject: r.text(2),
        csrf: r.text(3),
        expires_at: r.int(4),
    }
}

impl Store {
    /// Creates an admin user, or with `replace` sets the role and password of the one that
    /// has this e-mail (the demo's owner on a reused database).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_admin_user(
        &self,
        tenant: &str,
        email: &str,
        role: &str,
        password_hash: &str,
        replace: bool,
        actor: &str,
        now: i64,
    ) -> Result<AdminUser> {
        let (tenant, email, role, hash, actor) = (
            tenant.to_string(),
            email.to_string(),
            role.to_string(),
            password_hash.to_string(),
            actor.to_string(),
        );
        self.write("", move |c| {
            let existing = c.query_one(
                "SELECT id FROM admin_users WHERE tenant_id = $1 AND email = $2",
                &[tenant.as_str().into(), email.as_str().into()],
            )?;
            let id = match existing {
                Some(r) if replace => {
                    c.execute(
                        "UPDATE admin_users SET role = $2, password_hash = $3, updated_at = $4 WHERE id = $1",
                        &[r.text(0).as_str().into(), role.as_str().into(), hash.as_str().into(), now.into()],
                    )?;
                    r.text(0)
                }
                Some(_) => {
                    return Err(StoreError::Conflict(format!(
                        "an admin user with e-mail {email} already exists"
                    )));
                }
                None => {
                    let id = crate::random_id("usr_", 16);
                    c.execute(
                        "INSERT INTO admin_users (id, tenant_id, email, password_hash, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                        &[id.as_str().into(), tenant.as_str().into(), email.as_str().into(), hash.as_str().into(), role.as_str().into(), now.into()],
                    )
                    .map_err(|e| match e.kind {
                        DbErrorKind::Unique => StoreError::Conflict(format!(
                            "an admin user with e-mail {email} already exists"
                        )),
                        _ => e.into(),
                    })?;
                    id
                }
            };
            let detail = serde_json::json!({ "email": email, "role": role }).to_string();
            audit(c, &tenant, &actor, "admin_user.put", Some(&id), &detail, now)?;
            c.query_one(
                &format!("SELECT {USER_COLUMNS} FROM admin_users WHERE id = $1"),
                &[id.as_str().into()],
            )?
            .map(|r| user(&r))
            .ok_or_else(|| StoreError::NotFound("new admin user".into()))
        })
        .await
    }

    /// The admin user of `tenant` with this e-mail, and their password hash.
    pub async fn admin_user_by_email(
        &self,
        tenant: &str,
        email: &str,
    ) -> Result<Option<(AdminUser, String)>> {
        let (tenant, email) = (tenant.to_string(), email.to_string());
        self.read(move |c| {
            Ok(c.query_one(
                &format!("SELECT {USER_COLUMNS}, password_hash FROM admin_users WHERE tenant_id = $1 AND email = $2"),
                &[tenant.as_str().into(), email.as_str().into()],
            )?
            .map(|r| (user(&r), r.text(5))))
        })
        .await
    }

    pub async fn admin_user(&self, tenant: &str, id: &str) -> Result<Option<AdminUser>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |c| {
            Ok(c.query_one(
                &format!("SELECT {USER_COLUMNS} FROM admin_users WHERE tenant_id = $1 AND id = $2"),
                &[tenant.as_str().into(), id.as_str().into()],
            )?
            .map(|r| user(&r)))
        })
        .await
    }

    pub async fn admin_users(&self, tenant: &str) -> Result<Vec<AdminUser>> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM admin_users WHERE tenant_id = $1 ORDER BY email"
                ),
                &[tenant.as_str().into()],
            )?
            .iter()
            .map(user)
            .collect())
        })
        .await
    }

    /// Stores a new session under the hash of its token; expired sessions are swept now and
    /// then by the same write.
    pub async fn create_session(&self, token_hash: &str, s: WebSession, now: i64) -> Result<()> {
        let hash = token_hash.to_string();
        self.write("", move |c| {
            c.execute(
                "INSERT INTO web_sessions (hash, tenant_id, kind, subject, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[hash.as_str().into(), s.tenant_id.as_str().into(), s.kind.as_str().into(), s.subject.as_str().into(), s.csrf.as_str().into(), now.into(), s.expires_at.into()],
            )?;
            c.execute("DELETE FROM web_sessions WHERE expires_at < $1", &[now.into()])?;
            c.execute("DELETE FROM magic_links WHERE expires_at < $1", &[now.into()])?;
            Ok(())
        })
        .await
    }

    /// The live session whose token hashes to `token_hash`.
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<WebSession>> {
        let hash = token_hash.to_string();
        self.read(move |c| {
            Ok(c.query_one(
                "SELECT tenant_id, kind, subject, csrf, expires_at FROM web_sessions WHERE hash = $1 AND expires_at > $2",
                &[hash.as_str().into(), now.into()],
            )?
            .map(|r| session(&r)))
        })
        .await
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let hash = token_hash.to_string();
        self.write("", move |c| {
            c.execute(
                "DELETE FROM web_sessions WHERE hash = $1",
                &[hash.as_str().into()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn create_magic_link(
        &self,
        tenant: &str,
        member: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<()> {
        let (tenant, member, hash) = (
            tenant.to_string(),
            member.to_string(),
            token_hash.to_string(),
        );
        self.write("", move |c| {
            c.execute(
                "INSERT INTO magic_links (hash, tenant_id, member_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                &[hash.as_str().into(), tenant.as_str().into(), member.as_str().into(), now.into(), expires_at.into()],
            )?;
            Ok(())
        })
        .await
    }

    /// Marks the link used and returns its member, if it is live, unused and of `tenant`.
    pub async fn use_magic_link(
        &self,
        tenant: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let (tenant, hash) = (tenant.to_string(), token_hash.to_string());
        self.write("", move |c| {
            let row = c.query_one(
                &format!(
                    "SELECT member_id FROM magic_links WHERE hash = $1 AND tenant_id = $2 AND used_at IS NULL AND expires_at > $3{}",
                    c.dialect().for_update()
                ),
                &[hash.as_str().into(), tenant.as_str().into(), now.into()],
            )?;
            let Some(r) = row else { return Ok(None) };
            c.execute(
                "UPDATE magic_links SET used_at = $2 WHERE hash = $1",
                &[hash.as_str().into(), now.into()],
            )?;
            Ok(Some(r.text(0)))
        })
        .await
    }

    pub async fn branding(&self, tenant: &str) -> Result<Option<Branding>> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            let Some(r) = c.query_one(
                "SELECT settings, logo FROM branding WHERE tenant_id = $1",
                &[tenant.as_str().into()],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(Branding {
                // A row this code wrote always parses; an unreadable one falls back to defaults.
                settings: serde_json::from_str(&r.text(0)).unwrap_or_default(),
                logo: r.opt_text(1),
            }))
        })
        .await
    }

    /// Replaces the branding; `logo: None` keeps the stored logo unless `remove_logo`.
    pub async fn put_branding(
        &self,
        tenant: &str,
        settings: &BrandingSettings,
        logo: Option<String>,
        remove_logo: bool,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let (tenant, actor) = (tenant.to_string(), actor.to_string());
        let json = serde_json::to_string(settings)?;
        self.write("", move |c| {
            let current: Option<String> = c
                .query_one(
                    "SELECT logo FROM branding WHERE tenant_id = $1",
                    &[tenant.as_str().into()],
                )?
                .and_then(|r| r.opt_text(0));
            let logo = if remove_logo { None } else { logo.clone().or(current) };
            c.execute("DELETE FROM branding WHERE tenant_id = $1", &[tenant.as_str().into()])?;
            c.execute(
                "INSERT INTO branding (tenant_id, settings, logo, updated_at) VALUES ($1, $2, $3, $4)",
                &[tenant.as_str().into(), json.as_str().into(), logo.as_ref().into(), now.into()],
            )?;
            audit(c, &tenant, &actor, "branding.update", None, &json, now)
        })
        .await
    }

    pub async fn set_member_password(
        &self,
        tenant: &str,
        member: &str,
        hash: &str,
        now: i64,
    ) -> Result<()> {
        let (tenant, member, hash) = (tenant.to_string(), member.to_string(), hash.to_string());
        self.write(&member.clone(), move |c| {
            c.execute(
                "DELETE FROM member_passwords WHERE tenant_id = $1 AND member_id = $2",
                &[tenant.as_str().into(), member.as_str().into()],
            )?;
            c.execute(
                "INSERT INTO member_passwords (tenant_id, member_id, hash, updated_at) VALUES ($1, $2, $3, $4)",
                &[tenant.as_str().into(), member.as_str().into(), hash.as_str().into(), now.into()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn member_password(&self, tenant: &str, member: &str) -> Result<Option<String>> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| {
            Ok(c.query_one(
                "SELECT hash FROM member_passwords WHERE tenant_id = $1 AND member_id = $2",
                &[tenant.as_str().into(), member.as_str().into()],
            )?
            .map(|r| r.text(0)))
        })
        .await
    }

    /// Records a member's request to be erased (the erasure itself is an operator's job);
    /// a second request while one is open changes nothing.
    pub async fn request_deletion(
        &self,
        tenant: &str,
        member: &str,
        source: &str,
        now: i64,
    ) -> Result<()> {
        let (tenant, member, source) = (tenant.to_string(), member.to_string(), source.to_string());
        self.write(&member.clone(), move |c| {
            let open = c.query_one(
                "SELECT id FROM deletion_requests WHERE tenant_id = $1 AND member_id = $2 AND handled_at IS NULL",
                &[tenant.as_str().into(), member.as_str().into()],
            )?;
            if open.is_none() {
                c.execute(
                    "INSERT INTO deletion_requests (tenant_id, member_id, source, requested_at) VALUES ($1, $2, $3, $4)",
                    &[tenant.as_str().into(), member.as_str().into(), source.as_str().into(), now.into()],
                )?;
                audit(c, &tenant, &format!("member:{member}"), "member.deletion_request", Some(&member), "{}", now)?;
            }
            Ok(())
        })
        .await
    }

    /// Deletion requests of one member (`Some`) or the tenant's open ones (`None`), newest first.
    pub async fn deletion_requests(
        &self,
        tenant: &str,
        member: Option<&str>,
    ) -> Result<Vec<DeletionRequest>> {
        let (tenant, member) = (tenant.to_string(), member.map(str::to_string));
        self.read(move |c| {
            let rows = match &member {
                Some(m) => c.query(
                    "SELECT id, member_id, source, requested_at, handled_at FROM deletion_requests WHERE tenant_id = $1 AND member_id = $2 ORDER BY id DESC LIMIT 50",
                    &[tenant.as_str().into(), m.as_str().into()],
                )?,
                None => c.query(
                    "SELECT id, member_id, source, requested_at, handled_at FROM deletion_requests WHERE tenant_id = $1 AND handled_at IS NULL ORDER BY id DESC LIMIT 200",
                    &[tenant.as_str().into()],
                )?,
            };
            Ok(rows
                .iter()
                .map(|r| DeletionRequest {
                    id: r.int(0),
                    member_id: r.text(1),
                    source: r.text(2),
                    requested_at: ts(r.int(3)),
                    handled: r.opt_int(4).is_some(),
                })
                .collect())
        })
        .await
    }

    /// Writes one line to the audit log (console actions that have no store write of their own).
    pub async fn audit(
        &self,
        tenant: &str,
        actor: &str,
        action: &str,
        subject: Option<&str>,
        detail: &str,
        now: i64,
    ) -> Result<()> {
        let (tenant, actor, action, subject, detail) = (
            tenant.to_string(),
            actor.to_string(),
            action.to_string(),
            subject.map(str::to_string),
            detail.to_string(),
        );
        self.write("", move |c| {
            audit(
                c,
                &tenant,
                &actor,
                &action,
                subject.as_deref(),
                &detail,
                now,
            )
        })
        .await
    }
}
