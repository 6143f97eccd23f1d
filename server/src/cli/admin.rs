//! `syncline admin create` and `syncline admin token create|list|revoke`: through a running
//! server's admin API with a token, else in the data directory's store (how a fresh data
//! directory gets its first admin user or token).

use std::collections::HashMap;

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::StoreArgs;
use super::remote::{self, Target};
use crate::storage::{AdminRole, StoredAdminUser};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Creates an admin user (console login), or sets its password and role. The password
    /// comes from --password or, without it, from stdin (at least 8 characters).
    Create {
        /// Admin user name.
        #[arg(long, default_value = crate::admin::DEFAULT_ADMIN_NAME)]
        name: String,
        #[arg(long)]
        password: Option<String>,
        /// `admin` (everything) or `viewer` (read only).
        #[arg(long, default_value = "admin")]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manages admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates an API token and prints it (shown this once).
    Create {
        /// What the token is for, e.g. `ci`.
        #[arg(long)]
        name: String,
        /// `admin` (everything) or `viewer` (read only).
        #[arg(long, default_value = "viewer")]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists API tokens (ids, names, roles).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revokes an API token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn role(name: &str) -> anyhow::Result<AdminRole> {
    match AdminRole::from_name(name) {
        Some(role) => Ok(role),
        None => bail!("unknown role {name:?}: use admin or viewer"),
    }
}

/// Runs an admin command.
pub(super) async fn run(command: AdminCommand, env: &HashMap<String, String>) -> anyhow::Result<()> {
    match command {
        AdminCommand::Create { name, password, role: role_name, store } => {
            let role = role(&role_name)?;
            let password = remote::password(password)?;
            if let Some(problem) = crate::admin::admin_password_problem(&password) {
                bail!("{problem}");
            }
            let (_, settings) = remote::settings(&store, env)?;
            match remote::target(&store, &settings)? {
                Target::Remote(api) => {
                    let body = json!({"password": password, "role": role.as_str()});
                    api.call(Method::PUT, &["v1", "admin", "admins", &name], &[], Some(body)).await?;
                }
                Target::Local(db) => {
                    let params = syncline_proto::sdk::passwords::Params::DEFAULT;
                    let password_hash = syncline_proto::sdk::passwords::hash_password_here(&password, &params)?;
                    let created_ms = db.admin_user(&name)?.map_or_else(crate::auth::now_ms, |user| user.created_ms);
                    db.put_admin_user(&StoredAdminUser { name: name.clone(), password_hash, role, created_ms })?;
                }
            }
            println!("admin user {name} ({}) is set", role.as_str());
            Ok(())
        }
        AdminCommand::Token { command } => token(command, env).await,
    }
}

async fn token(command: TokenCommand, env: &HashMap<String, String>) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, role: role_name, store } => {
            let role = role(&role_name)?;
            let (_, settings) = remote::settings(&store, env)?;
            let token = match remote::target(&store, &settings)? {
                Target::Remote(api) => {
                    let body = json!({"name": name, "role": role.as_str()});
                    let created = api.call(Method::POST, &["v1", "admin", "tokens"], &[], Some(body)).await?;
                    created["token"].as_str().unwrap_or_default().to_owned()
                }
                Target::Local(db) => crate::admin::create_token_in(&*db, &name, role)?,
            };
            println!("{token}");
            Ok(())
        }
        TokenCommand::List { store } => {
            let (_, settings) = remote::settings(&store, env)?;
            match remote::target(&store, &settings)? {
                Target::Remote(api) => {
                    let query = [("limit", "500".to_owned())];
                    let page = api.call(Method::GET, &["v1", "admin", "tokens"], &query, None).await?;
                    for token in page["items"].as_array().into_iter().flatten() {
                        println!(
                            "{}  {}  {}",
                            token["id"].as_str().unwrap_or_default(),
                            token["role"].as_str().unwrap_or_default(),
                            token["name"].as_str().unwrap_or_default()
                        );
                    }
                }
                Target::Local(db) => {
                    for token in db.api_tokens()? {
                        println!("{}  {}  {}", token.id, token.role.as_str(), token.name);
                    }
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id, store } => {
            let (_, settings) = remote::settings(&store, env)?;
            match remote::target(&store, &settings)? {
                Target::Remote(api) => {
                    api.call(Method::DELETE, &["v1", "admin", "tokens", &id], &[], None).await?;
                }
                Target::Local(db) => {
                    if !db.delete_api_token(&id)? {
                        bail!("there is no token {id:?}");
                    }
                }
            }
            println!("revoked token {id}");
            Ok(())
        }
    }
}
