//! The `syncline` command line: `serve`, `user add`, `ingest`.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use syncline_proto::v1::{PushRequest, Record, Value, ingest_client::IngestClient};

use crate::config::{Config, LogFormat, StoreSettings};
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::{app, shutdown, telemetry};

/// Syncline: a push-first realtime sync server.
#[derive(Debug, Parser)]
#[command(name = "syncline", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server (embedded store in ./data and the demo app unless configured).
    Serve(ServeArgs),
    /// Manages users: of the demo app (its channel checks logins) when `serve` would run the
    /// demo, else of the embedded store (no server may be running on it).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Pushes records from a JSON file (or stdin) into a partition over gRPC.
    Ingest(IngestArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (also SYNCLINE_CONFIG).
    #[arg(long, env = "SYNCLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides config and SYNCLINE_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device endpoint address, e.g. 127.0.0.1:7700.
    #[arg(long)]
    pub device_addr: Option<String>,
    /// gRPC endpoint address, e.g. 127.0.0.1:7701.
    #[arg(long)]
    pub grpc_addr: Option<String>,
}

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
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// TOML config file naming the data directory (also SYNCLINE_CONFIG).
    #[arg(long, env = "SYNCLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides config and SYNCLINE_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Source name.
    #[arg(long)]
    pub source: String,
    /// Partition key: a user id for user sources; omit for app sources.
    #[arg(long, default_value = "")]
    pub key: String,
    /// JSON file: an array of records or one record per line. `-` or absent: stdin.
    /// A record is {"id": "...", "fields": {...}}; {"id": "...", "delete": true} deletes.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// gRPC endpoint of the server.
    #[arg(long, default_value = "http://127.0.0.1:7701", env = "SYNCLINE_GRPC_URL")]
    pub grpc_url: String,
    /// Ingest token, when the server requires one.
    #[arg(long, env = "SYNCLINE_INGEST_TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for an https endpoint.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Records per Push call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// Loads the config for `serve` and the store commands: file, env, then flags.
pub fn load_config(
    file: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    env: &HashMap<String, String>,
) -> anyhow::Result<Config> {
    let mut config = Config::load(file, env)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

/// Runs `user add`: into the demo app's channel database when the demo is what `serve` would
/// run, into the embedded store otherwise (refused when a channel checks logins: its
/// backend owns the users).
pub async fn user_add(
    name: &str,
    password: Option<String>,
    store: &StoreArgs,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let config = load_config(store.config.as_deref(), store.data_dir.clone(), env)?;
    let password = match password {
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
    let settings = config.validate()?;
    if settings.demo.is_some() {
        return demo_user_add(&settings.store, name, &password).await;
    }
    if let Some(channel) = &settings.auth.channel {
        bail!(
            "logins on this server are checked by the channel at {channel} (auth.channel): \
             add the user in that backend"
        );
    }
    let path = settings.store.data_dir.join(crate::app::STORE_FILE_NAME);
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default())?;
    crate::auth::add_user(&store, name, &password)?;
    println!("added user {name}");
    Ok(())
}

/// Adds a user to the demo app: the demo checks logins through its CRM channel, so the user
/// goes into the channel's database, which SQLite lets this process write while a server
/// runs on it.
#[cfg(feature = "demo")]
async fn demo_user_add(store: &StoreSettings, name: &str, password: &str) -> anyhow::Result<()> {
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

/// Refuses: this build has no demo app.
#[cfg(not(feature = "demo"))]
async fn demo_user_add(_store: &StoreSettings, _name: &str, _password: &str) -> anyhow::Result<()> {
    bail!("this build has no demo app (cargo feature `demo`): configure [sources] and add users to the embedded store")
}

/// One line of an ingest file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRecord {
    id: String,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    delete: bool,
}

/// Converts a JSON value to a typed field value.
pub fn json_to_value(name: &str, value: &serde_json::Value) -> anyhow::Result<Value> {
    Ok(match value {
        serde_json::Value::Null => Value::null(),
        serde_json::Value::Bool(flag) => Value::bool(*flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => Value::int(int),
            None => Value::double(number.as_f64().context("number out of range")?),
        },
        serde_json::Value::String(text) => Value::string(text.clone()),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            bail!("field {name:?}: nested arrays and objects are not supported; encode them as a string")
        }
    })
}

fn parse_ingest(text: &str) -> anyhow::Result<(Vec<Record>, Vec<String>)> {
    let items: Vec<IngestRecord> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).context("the input is not a JSON array of records")?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(number, line)| {
                serde_json::from_str(line).with_context(|| format!("line {}: not a JSON record", number + 1))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for item in items {
        if item.delete {
            deletes.push(item.id);
            continue;
        }
        let mut fields = std::collections::BTreeMap::new();
        for (name, value) in &item.fields {
            fields.insert(name.clone(), json_to_value(name, value)?);
        }
        upserts.push(Record { id: item.id, fields, version: 0 });
    }
    Ok((upserts, deletes))
}

/// Runs `ingest`.
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let text = match args.file.as_deref() {
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    };
    let (upserts, deletes) = parse_ingest(&text)?;
    let mut endpoint = tonic::transport::Endpoint::from_shared(args.grpc_url.clone())
        .with_context(|| format!("{} is not a valid URL", args.grpc_url))?;
    if let Some(ca) = &args.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.grpc_url))?;
    let client = IngestClient::new(channel);
    let batch = args.batch.clamp(1, crate::storage::MAX_BATCH_CHANGES);
    let mut applied = 0;
    let mut last_head = 0;
    let push = |upserts: Vec<Record>, deletes: Vec<String>| {
        let mut request =
            tonic::Request::new(PushRequest { source: args.source.clone(), key: args.key.clone(), upserts, deletes });
        if let Some(token) = &args.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        let mut client = client.clone();
        async move { client.push(request).await }
    };
    for chunk in upserts.chunks(batch) {
        let response =
            push(chunk.to_vec(), Vec::new()).await.map_err(|status| anyhow::anyhow!("{}", status.message()))?;
        applied += response.get_ref().applied;
        last_head = response.get_ref().head;
    }
    for chunk in deletes.chunks(batch) {
        let response =
            push(Vec::new(), chunk.to_vec()).await.map_err(|status| anyhow::anyhow!("{}", status.message()))?;
        applied += response.get_ref().applied;
        last_head = response.get_ref().head;
    }
    println!(
        "{applied} changes applied to {}/{}; partition head is now {last_head}",
        args.source,
        if args.key.is_empty() { "*" } else { &args.key }
    );
    Ok(())
}

/// Runs the `syncline` command line with the process's arguments and environment.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;

    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let outcome =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(
            |runtime| {
                runtime.block_on(async {
                match cli.command {
                    Command::Serve(args) => {
                        let config = load_config(args.config.as_deref(), args.data_dir.clone(), &env)?;
                        let mut config = config;
                        if let Some(addr) = args.device_addr {
                            config.device.addr = addr;
                        }
                        if let Some(addr) = args.grpc_addr {
                            config.grpc.addr = addr;
                        }
                        let settings = config.validate()?;
                        telemetry::init(settings.log_format == LogFormat::Json);
                        tracing::info!(config = %config.redacted(), "starting syncline {}", env!("CARGO_PKG_VERSION"));
                        app::run(settings, shutdown::signal()).await
                    }
                    Command::User { command: UserCommand::Add { name, password, store } } => {
                        user_add(&name, password, &store, &env).await
                    }
                    Command::Ingest(args) => ingest(args).await,
                }
            })
            },
        );
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_accepts_arrays_and_lines_with_typed_values() {
        let (upserts, deletes) = parse_ingest(
            r#"[{"id":"a","fields":{"n":3,"x":1.5,"ok":true,"s":"t","z":null}},{"id":"b","delete":true}]"#,
        )
        .unwrap();
        assert_eq!(deletes, vec!["b".to_owned()]);
        assert_eq!(upserts[0].fields["n"], Value::int(3));
        assert_eq!(upserts[0].fields["x"], Value::double(1.5));
        assert_eq!(upserts[0].fields["z"], Value::null());
        let (upserts, _) = parse_ingest("{\"id\":\"a\"}\n\n{\"id\":\"b\",\"fields\":{}}\n").unwrap();
        assert_eq!(upserts.len(), 2);
        assert!(parse_ingest(r#"[{"id":"a","fields":{"n":[1]}}]"#).unwrap_err().to_string().contains("nested"));
        assert!(parse_ingest("{\"id\":\"a\"}\nnope\n").unwrap_err().to_string().contains("line 2"));
    }
}
