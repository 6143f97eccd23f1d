//! `syncline ingest`: pushes records from a JSON file (or stdin) into a partition over gRPC.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use syncline_proto::v1::{PushRequest, Record, Value, ingest_client::IngestClient};

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
