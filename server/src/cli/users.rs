//! `syncline user add|list|passwd|disable|enable|delete`: through the running server's admin
//! API with a token, else in the data directory's store. `user add` on the demo writes the
//! demo app's database (its channel checks logins), which works while a server runs.

use std::collections::HashMap;

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::StoreArgs;
use super::remote::{self, Target};
use crate::config::{Partitioning, Settings, StoreSettings};
use crate::storage::Store;
use crate::storage::{PartitionName, UserControls};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a user. The password comes from --password or, without it, from stdin.
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists users (local users, and disabled ones).
    List {
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Changes a local user's password (from --password or stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disables a user: refused at login (close 4003) until enabled.
    Disable {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enables a disabled user.
    Enable {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deletes a user and revokes their sessions.
    Delete {
        name: String,
        /// Also delete the user's `user` partitions.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs a user command.
pub(super) async fn run(command: UserCommand, env: &HashMap<String, String>) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { name, password, store } => user_add(&name, password, &store, env).await,
        UserCommand::List { prefix, store } => list(prefix.unwrap_or_default(), &store, env).await,
        UserCommand::Passwd { name, password, store } => passwd(&name, password, &store, env).await,
        UserCommand::Disable { name, store } => set_disabled(&name, true, &store, env).await,
        UserCommand::Enable { name, store } => set_disabled(&name, false, &store, env).await,
        UserCommand::Delete { name, purge, store } => delete(&name, purge, &store, env).await,
    }
}

/// Runs `user add`: through the admin API with a token; else into the demo app's channel
/// database when the demo is what `serve` would run, into the embedded store otherwise
/// (refused when a channel checks logins: its backend owns the users).
pub async fn user_add(
    name: &str,
    password: Option<String>,
    store: &StoreArgs,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let password = remote::password(password)?;
    let (_, settings) = remote::settings(store, env)?;
    if let Some(api) = remote::remote(store, &settings)? {
        api.call(Method::POST, &["v1", "admin", "users"], &[], Some(json!({"name": name, "password": password})))
            .await?;
        println!("added user {name}");
        return Ok(());
    }
    if settings.demo.is_some() {
        return demo_user_add(&settings.store, name, &password).await;
    }
    if let Some(channel) = &settings.auth.channel {
        bail!(
            "logins on this server are checked by the channel at {channel} (auth.channel): \
             add the user in that backend"
        );
    }
    let db = match remote::target(store, &settings)? {
        Target::Local(db) => db,
        Target::Remote(_) => bail!("a token was given, yet the admin API was not used"),
    };
    crate::auth::add_user(&*db, name, &password)?;
    println!("added user {name}");
    Ok(())
}

/// Adds a user to the demo app: the demo checks logins through its CRM channel, so the user
/// goes into the channel's database, which SQLite lets this process write while a server
/// runs on it.
#[cfg(feature = "demo")]
async fn demo_user_add(store: &StoreSettings, name: &str, password: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&store.data_dir)
        .with_context(|| format!("cannot create the data directory {}", store.data_dir.display()))?;
    let path = store.data_dir.join(crate::demo::DEMO_DB_FILE);
    let db = syncline_example_crm::CrmDb::open(&path)
        .await
        .with_context(|| format!("cannot open the demo app's database {}", path.display()))?;
    db.add_user(name, password).await.with_context(|| format!("cannot add user {name:?} to the demo app"))?;
    println!("added user {name} to the demo app (logins are checked by its CRM channel)");
    Ok(())
}

/// Returns the demo app's users (from its database) when the demo is what `serve` would run.
#[cfg(feature = "demo")]
async fn demo_user_ids(settings: &Settings, prefix: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let path = settings.store.data_dir.join(crate::demo::DEMO_DB_FILE);
    if settings.demo.is_none() || !path.exists() {
        return Ok(Vec::new());
    }
    let db = syncline_example_crm::CrmDb::open(&path)
        .await
        .with_context(|| format!("cannot open the demo app's database {}", path.display()))?;
    Ok(db.user_ids(None, prefix, usize::MAX).await?)
}

/// Returns no users: this build has no demo app.
#[cfg(not(feature = "demo"))]
async fn demo_user_ids(_settings: &Settings, _prefix: &str) -> anyhow::Result<Vec<String>> {
    Ok(Vec::new())
}

/// Refuses: this build has no demo app.
#[cfg(not(feature = "demo"))]
async fn demo_user_add(_store: &StoreSettings, _name: &str, _password: &str) -> anyhow::Result<()> {
    bail!("this build has no demo app (cargo feature `demo`): configure [sources] and add users to the embedded store")
}

async fn list(prefix: String, args: &StoreArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let (_, settings) = remote::settings(args, env)?;
    match remote::target(args, &settings)? {
        Target::Remote(api) => {
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("prefix", prefix.clone()), ("limit", "500".to_owned())];
                if let Some(cursor) = cursor.take() {
                    query.push(("cursor", cursor));
                }
                let page = api.call(Method::GET, &["v1", "admin", "users"], &query, None).await?;
                for user in page["items"].as_array().into_iter().flatten() {
                    let disabled = if user["disabled"] == true { "  (disabled)" } else { "" };
                    println!("{}{disabled}", user["name"].as_str().unwrap_or_default());
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => return Ok(()),
                }
            }
        }
        Target::Local(store) => {
            let mut after: Option<String> = None;
            loop {
                let users = store.users_page(after.as_deref(), &prefix, 500)?;
                for user in &users {
                    let disabled = if store.user_controls(&user.name)?.disabled { "  (disabled)" } else { "" };
                    println!("{}{disabled}", user.name);
                }
                match users.last() {
                    Some(last) => after = Some(last.name.clone()),
                    None => break,
                }
            }
            let mut listed = std::collections::BTreeSet::new();
            for (name, controls) in store.controlled_users()? {
                if controls.disabled && name.starts_with(&prefix) && store.user(&name)?.is_none() {
                    println!("{name}  (disabled)");
                    listed.insert(name);
                }
            }
            for name in demo_user_ids(&settings, &prefix).await? {
                if !listed.contains(&name) && store.user(&name)?.is_none() {
                    println!("{name}  (demo app)");
                }
            }
            Ok(())
        }
    }
}

async fn passwd(
    name: &str,
    password: Option<String>,
    args: &StoreArgs,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let password = remote::password(password)?;
    let (_, settings) = remote::settings(args, env)?;
    match remote::target(args, &settings)? {
        Target::Remote(api) => {
            let path = ["v1", "admin", "users", name, "password"];
            api.call(Method::PUT, &path, &[], Some(json!({"password": password}))).await?;
        }
        Target::Local(store) => {
            let hash = syncline_proto::sdk::passwords::hash_password_here(
                &password,
                &syncline_proto::sdk::passwords::Params::DEFAULT,
            )?;
            if !store.set_user_password(name, &hash)? {
                bail!("there is no local user {name:?}");
            }
        }
    }
    println!("changed the password of {name}");
    Ok(())
}

async fn set_disabled(
    name: &str,
    disabled: bool,
    args: &StoreArgs,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let (_, settings) = remote::settings(args, env)?;
    let verb = if disabled { "disable" } else { "enable" };
    match remote::target(args, &settings)? {
        Target::Remote(api) => {
            api.call(Method::POST, &["v1", "admin", "users", name, verb], &[], Some(json!({}))).await?;
        }
        Target::Local(store) => {
            if store.user(name)?.is_none() && settings.auth.channel.is_none() && settings.demo.is_none() {
                bail!("there is no user {name:?}");
            }
            let controls = UserControls { disabled, ..store.user_controls(name)? };
            store.set_user_controls(name, &controls)?;
        }
    }
    println!("{verb}d user {name}");
    Ok(())
}

async fn delete(name: &str, purge: bool, args: &StoreArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let (_, settings) = remote::settings(args, env)?;
    match remote::target(args, &settings)? {
        Target::Remote(api) => {
            let query = [("purge", purge.to_string())];
            api.call(Method::DELETE, &["v1", "admin", "users", name], &query, None).await?;
        }
        Target::Local(store) => delete_locally(&*store, &settings, name, purge)?,
    }
    println!("deleted user {name}{}", if purge { " and their partitions" } else { "" });
    Ok(())
}

/// Returns the demo app's `user` sources when the demo is what `serve` would run (its
/// sources are declared when it starts, not in the settings).
#[cfg(feature = "demo")]
fn demo_user_sources(settings: &Settings) -> Vec<String> {
    let demo = crate::demo::DEMO_SOURCES.iter().filter(|(_, partitioning)| *partitioning == Partitioning::User);
    if settings.demo.is_some() { demo.map(|(source, _)| (*source).to_owned()).collect() } else { Vec::new() }
}

/// Returns no sources: this build has no demo app.
#[cfg(not(feature = "demo"))]
fn demo_user_sources(_settings: &Settings) -> Vec<String> {
    Vec::new()
}

/// Deletes a user in the store, as the admin API does: local user, sessions, partitions.
fn delete_locally(store: &dyn Store, settings: &Settings, name: &str, purge: bool) -> anyhow::Result<()> {
    let deleted = store.delete_user(name)?;
    if !deleted && settings.auth.channel.is_none() && settings.demo.is_none() {
        bail!("there is no user {name:?}");
    }
    let controls = UserControls { sessions_revoked_ms: crate::auth::now_ms(), ..store.user_controls(name)? };
    store.set_user_controls(name, &controls)?;
    if purge {
        let configured = settings
            .sources
            .iter()
            .filter(|(_, source)| source.partitioning == Partitioning::User)
            .map(|(source, _)| source.clone());
        for source in configured.chain(demo_user_sources(settings)) {
            store.purge_partition(&PartitionName::new(source, name))?;
        }
    }
    Ok(())
}
