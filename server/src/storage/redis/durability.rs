//! Acknowledged means durable: at open the store checks how the server persists writes,
//! and after each acknowledged write it can wait for replicas.
//!
//! A write is durable when the server appends it to its AOF and fsyncs before answering
//! (`appendonly yes` with `appendfsync always`), or when `store.redis_wait_replicas = N` is
//! set: every write the store acknowledges is then followed by `WAIT N <timeout>`, and fails
//! (UNAVAILABLE) when fewer replicas confirm it. Anything else loses acknowledged writes on a
//! crash, so the store refuses to open on it unless `store.allow_volatile = true`. Servers
//! that refuse `CONFIG GET` (managed services) cannot be checked: they need one of the two
//! explicit settings.
//!
//! In a Redis Cluster the crate sends `CONFIG GET` to one node (and `WAIT` to every primary,
//! keeping the smallest count): every node must be configured alike.

use std::collections::HashMap;
use std::time::Duration;

use redis::ConnectionLike;
use tracing::{info, warn};

use crate::storage::{StoreError, StoreResult};

/// How long `WAIT` waits for replicas by default before the write is reported unavailable.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the store makes acknowledged writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Durability {
    /// Replicas every acknowledged write waits for (`WAIT`); 0: none.
    pub(super) wait_replicas: u32,
}

/// What the server said about its append-only file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AofConfig {
    pub(super) appendonly: String,
    pub(super) appendfsync: String,
}

impl AofConfig {
    fn fsyncs_every_write(&self) -> bool {
        self.appendonly.eq_ignore_ascii_case("yes") && self.appendfsync.eq_ignore_ascii_case("always")
    }
}

/// Reads the server's AOF settings; `None` when `CONFIG GET` is refused or unknown.
pub(super) fn read_aof_config(connection: &mut dyn ConnectionLike) -> Option<AofConfig> {
    let config: HashMap<String, String> = redis::cmd("CONFIG").arg("GET").arg("append*").query(connection).ok()?;
    Some(AofConfig { appendonly: config.get("appendonly")?.clone(), appendfsync: config.get("appendfsync")?.clone() })
}

/// Decides how writes are made durable, or refuses: see the module docs.
pub(super) fn decide(aof: Option<&AofConfig>, wait_replicas: u32, allow_volatile: bool) -> StoreResult<Durability> {
    let durability = Durability { wait_replicas };
    let fsyncs = aof.is_some_and(AofConfig::fsyncs_every_write);
    if fsyncs || wait_replicas > 0 {
        info!(aof_fsync_always = fsyncs, wait_replicas, "redis store: acknowledged writes are durable");
        return Ok(durability);
    }
    if allow_volatile {
        warn!(?aof, "redis store: acknowledged writes may be lost on a crash (store.allow_volatile = true)");
        return Ok(durability);
    }
    let detail = match aof {
        Some(aof) => format!(
            "the redis server has appendonly {} and appendfsync {}: set `appendonly yes` and \
             `appendfsync always` on the server, or store.redis_wait_replicas = N (replicas each \
             write waits for), or store.allow_volatile = true to accept losing writes",
            aof.appendonly, aof.appendfsync
        ),
        None => "the redis server refuses CONFIG GET, so its fsync policy cannot be checked: set \
                 store.redis_wait_replicas = N (replicas each write waits for), or \
                 store.allow_volatile = true if the server is known to run with `appendfsync always`"
            .to_owned(),
    };
    Err(StoreError::NotDurable { detail })
}

/// Waits until `replicas` replicas have every write of `connection` so far; fails when fewer
/// confirm within `timeout`.
pub(super) fn wait_for_replicas(
    connection: &mut dyn ConnectionLike,
    replicas: u32,
    timeout: Duration,
) -> redis::RedisResult<Result<(), StoreError>> {
    let confirmed: u64 = redis::cmd("WAIT").arg(replicas).arg(timeout.as_millis() as u64).query(connection)?;
    Ok(if confirmed >= u64::from(replicas) {
        Ok(())
    } else {
        Err(StoreError::Io(format!(
            "only {confirmed} of {replicas} redis replicas confirmed a write within {} ms",
            timeout.as_millis()
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aof(appendonly: &str, appendfsync: &str) -> AofConfig {
        AofConfig { appendonly: appendonly.into(), appendfsync: appendfsync.into() }
    }

    #[test]
    fn only_fsync_always_or_replicas_are_durable() {
        assert!(decide(Some(&aof("yes", "always")), 0, false).is_ok());
        assert!(decide(Some(&aof("no", "everysec")), 1, false).is_ok());
        assert!(decide(None, 2, false).is_ok());
        assert!(decide(Some(&aof("no", "everysec")), 0, true).is_ok());
        let Err(StoreError::NotDurable { detail }) = decide(Some(&aof("yes", "everysec")), 0, false) else {
            panic!("everysec is refused");
        };
        assert!(detail.contains("appendfsync always") && detail.contains("store.redis_wait_replicas"), "{detail}");
        let Err(StoreError::NotDurable { detail }) = decide(None, 0, false) else { panic!("unknown is refused") };
        assert!(detail.contains("CONFIG GET") && detail.contains("store.allow_volatile"), "{detail}");
    }
}
