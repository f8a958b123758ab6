//! `fidelis admin create`: the first console user of a tenant (and the tenant, if new). The
//! password is generated and printed once when none is given; only its Argon2 hash is stored.

use crate::{DbArg, db};
use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;
use fidelis_app::console::Role;
use fidelis_app::{App, SystemClock};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a console user; prints the password when it was generated.
    Create {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "owner", value_parser = ["owner", "marketer", "support", "analyst"])]
        role: String,
        /// At least 10 characters; generated when absent.
        #[arg(long, env = "FIDELIS_ADMIN_PASSWORD")]
        password: Option<String>,
    },
}

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Create {
            db,
            tenant,
            email,
            role,
            password,
        } => {
            let store = db::open(&db.database_url, Utc::now().timestamp_micros())?;
            let app = App::new(store, Arc::new(SystemClock));
            let role = Role::parse(&role).context("unknown role")?;
            let (user, generated) = app
                .create_admin_user(&tenant, &email, role, password.as_deref(), false, "cli")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created {} {} for tenant {}; sign in at /admin/login",
                user.role, user.email, user.tenant_id
            );
            if let Some(p) = generated {
                eprintln!("password (shown once):");
                println!("{p}");
            }
            Ok(())
        }
    }
}
