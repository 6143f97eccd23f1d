//! What the user and admin commands work on: a running server's admin API (when a token is
//! given) or the data directory's store (when no server holds it).

use std::collections::HashMap;
use std::io::Read as _;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::Value;

use super::{StoreArgs, load_config};
use crate::config::{Config, Settings, StoreBackendSettings};
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::storage::redis::RedisStore;
use crate::storage::{Store, StoreError};

/// A running server's admin API, with a token.
pub(super) struct AdminApi {
    base: reqwest::Url,
    token: String,
    http: reqwest::Client,
}

/// What a store command works on.
pub(super) enum Target {
    /// The running server, through its admin API.
    Remote(AdminApi),
    /// The configured store, opened by this process: the data directory's (no server runs on
    /// it), or Redis (shared with any running nodes: every write is one atomic script).
    Local(std::sync::Arc<dyn Store>),
}

/// The config and validated settings a store command runs with.
pub(super) fn settings(args: &StoreArgs, env: &HashMap<String, String>) -> anyhow::Result<(Config, Settings)> {
    let config = load_config(args.config.as_deref(), args.data_dir.clone(), env)?;
    let settings = config.validate()?;
    Ok((config, settings))
}

/// Returns the admin API when a token is given.
pub(super) fn remote(args: &StoreArgs, settings: &Settings) -> anyhow::Result<Option<AdminApi>> {
    let Some(token) = args.token.clone().filter(|token| !token.is_empty()) else { return Ok(None) };
    let addr = args.admin_addr.clone().unwrap_or_else(|| settings.admin.addr.to_string());
    let scheme = if settings.tls.is_some() || args.ca_cert.is_some() { "https" } else { "http" };
    let base = if addr.contains("://") { addr } else { format!("{scheme}://{addr}") };
    let base = reqwest::Url::parse(&base).with_context(|| format!("{base} is not a valid admin address"))?;
    let mut http = reqwest::Client::builder();
    if let Some(ca) = &args.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(Some(AdminApi { base, token, http: http.build()? }))
}

/// Returns the admin API when a token is given, else the store (refused, with what to do,
/// when a server holds it).
pub(super) fn target(args: &StoreArgs, settings: &Settings) -> anyhow::Result<Target> {
    if let Some(api) = remote(args, settings)? {
        return Ok(Target::Remote(api));
    }
    if let StoreBackendSettings::Redis(options) = &settings.store.backend {
        let store = RedisStore::open(options, None).context("cannot open the redis store")?;
        return Ok(Target::Local(std::sync::Arc::new(store)));
    }
    let path = settings.store.data_dir.join(crate::app::STORE_FILE_NAME);
    match EmbeddedStore::open(&path, EmbeddedOptions::default()) {
        Ok(store) => Ok(Target::Local(std::sync::Arc::new(store))),
        Err(StoreError::Locked { .. }) => bail!(
            "a server is running on {}: pass --token (or SYNCLINE_ADMIN_TOKEN) to manage it through its admin \
             API at {}",
            settings.store.data_dir.display(),
            args.admin_addr.clone().unwrap_or_else(|| settings.admin.addr.to_string())
        ),
        Err(error) => Err(error).with_context(|| format!("cannot open the store {}", path.display())),
    }
}

impl AdminApi {
    /// Calls `method` on the path made of `segments` (each percent-encoded) with `query` and
    /// an optional JSON body; returns the JSON answer (`Null` when empty) or the API's error.
    pub(super) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", self.base))?
            .clear()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(name, value)| (*name, value.as_str())));
        }
        let mut request = self.http.request(method, url.clone()).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let json: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            Ok(json)
        } else {
            let message = json["message"].as_str().map_or_else(|| json.to_string(), str::to_owned);
            bail!("the admin API answered {status}: {message}")
        }
    }
}

/// Returns `given`, or the password read from stdin; refuses an empty one.
pub(super) fn password(given: Option<String>) -> anyhow::Result<String> {
    let password = match given {
        Some(password) => password,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read the password from stdin")?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        bail!("the password is empty: pass --password or pipe it on stdin");
    }
    Ok(password)
}
