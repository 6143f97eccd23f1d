//! Counters the server's components own and count into at their sites (one call each), and
//! the metrics collector reads at scrape: plain relaxed atomics, no lock on any counting path.
//! Label values are fixed sets (results, codes, operations) or configured source names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use syncline_proto::v1::{ErrorCode, MutationResult};

use crate::storage::MutationOp;

/// How a device's handshake (its first Hello) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeResult {
    /// Welcome: the session started.
    Ok,
    /// Refused: credentials, token, protocol version, device state or the per-user cap.
    Refused,
    /// No Hello within the handshake timeout.
    Timeout,
    /// The first frame was not a Hello.
    ProtocolError,
}

impl HandshakeResult {
    /// Every result, in label order.
    pub const ALL: [HandshakeResult; 4] =
        [HandshakeResult::Ok, HandshakeResult::Refused, HandshakeResult::Timeout, HandshakeResult::ProtocolError];

    /// Returns the result's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Refused => "refused",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::ProtocolError => "protocol_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Device handshakes by result (the WebSocket upgrades that failed before any Hello are
/// push's `WireStats`).
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    results: [AtomicU64; HandshakeResult::ALL.len()],
}

impl HandshakeCounters {
    /// Counts a handshake that ended with `result`.
    pub fn count(&self, result: HandshakeResult) {
        self.results[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the handshakes that ended with `result`.
    pub fn get(&self, result: HandshakeResult) -> u64 {
        self.results[result.index()].load(Ordering::Relaxed)
    }
}

/// gRPC status code names (`tonic::Code` as a number indexes them), as label values.
pub const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// What backends pushed through the Ingest service: changes logged per configured source,
/// and calls by gRPC code.
#[derive(Debug, Default)]
pub struct IngestCounters {
    records: BTreeMap<String, AtomicU64>,
    calls: [AtomicU64; GRPC_CODES.len()],
}

impl IngestCounters {
    /// Returns counters for the configured `sources` (the only label values they take).
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            records: sources.into_iter().map(|source| (source.clone(), AtomicU64::new(0))).collect(),
            ..Default::default()
        }
    }

    /// Counts an Ingest call that ended with `code`.
    pub fn call(&self, code: tonic::Code) {
        let index = (code as usize).min(GRPC_CODES.len() - 1);
        self.calls[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `changes` logged into a partition of `source` (a configured source: others
    /// are refused before anything is logged).
    pub fn logged(&self, source: &str, changes: u64) {
        if let Some(counter) = self.records.get(source) {
            counter.fetch_add(changes, Ordering::Relaxed);
        }
    }

    /// Returns (source, changes logged) for every configured source.
    pub fn records(&self) -> impl Iterator<Item = (&str, u64)> {
        self.records.iter().map(|(source, counter)| (source.as_str(), counter.load(Ordering::Relaxed)))
    }

    /// Returns (gRPC code name, calls) for the codes calls ended with.
    pub fn calls(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        GRPC_CODES
            .iter()
            .zip(&self.calls)
            .map(|(code, calls)| (*code, calls.load(Ordering::Relaxed)))
            .filter(|(_, calls)| *calls > 0)
    }
}

/// Mutation operations, in label order.
pub const MUTATION_OPS: [MutationOp; 3] = [MutationOp::Create, MutationOp::Update, MutationOp::Delete];

/// Mutation outcome slots: 0 is success, then one per device error code number (1 to
/// [`ErrorCode::Unimplemented`]).
const OUTCOME_SLOTS: usize = ErrorCode::Unimplemented as usize + 1;

/// The mutation dispatcher's counters: mutations handed to it and not finished (the queue
/// depth), and outcomes by operation and result.
#[derive(Debug, Default)]
pub struct MutationCounters {
    submitted: AtomicU64,
    finished: AtomicU64,
    outcomes: [[AtomicU64; OUTCOME_SLOTS]; MUTATION_OPS.len()],
}

fn op_index(op: MutationOp) -> usize {
    match op {
        MutationOp::Create => 0,
        MutationOp::Update => 1,
        MutationOp::Delete => 2,
    }
}

/// Returns the label value of a mutation operation.
pub fn op_name(op: MutationOp) -> &'static str {
    match op {
        MutationOp::Create => "create",
        MutationOp::Update => "update",
        MutationOp::Delete => "delete",
    }
}

/// Returns the label value of an outcome slot: `ok`, or the error code's name without its
/// prefix, in lower case (`conflict`, `unavailable`...).
fn outcome_name(slot: usize) -> String {
    if slot == 0 {
        return "ok".to_owned();
    }
    let code = ErrorCode::try_from(slot as i32).unwrap_or(ErrorCode::Internal);
    code.as_str_name().trim_start_matches("ERROR_CODE_").to_ascii_lowercase()
}

impl MutationCounters {
    /// Counts a mutation handed to the dispatcher (queued durably before).
    pub fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a mutation's outcome, stored and sent to its device.
    pub fn finished(&self, op: MutationOp, result: &MutationResult) {
        let slot = match &result.error {
            Some(error) if !result.ok => usize::try_from(error.code).unwrap_or(0).clamp(1, OUTCOME_SLOTS - 1),
            Some(_) | None => 0,
        };
        self.outcomes[op_index(op)][slot].fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the mutations handed to the dispatcher that have no outcome yet.
    pub fn depth(&self) -> u64 {
        // Finished is read first: a mutation finishing between the loads is then not
        // counted as finished without having been submitted.
        let finished = self.finished.load(Ordering::Relaxed);
        self.submitted.load(Ordering::Relaxed).saturating_sub(finished)
    }

    /// Returns (operation, outcome, count) for every outcome that happened.
    pub fn outcomes(&self) -> Vec<(&'static str, String, u64)> {
        let mut outcomes = Vec::new();
        for op in MUTATION_OPS {
            for (slot, counter) in self.outcomes[op_index(op)].iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    outcomes.push((op_name(op), outcome_name(slot), count));
                }
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::MutationError;

    use super::*;

    #[test]
    fn mutation_outcomes_are_counted_by_operation_and_error_code() {
        let counters = MutationCounters::default();
        for _ in 0..3 {
            counters.submitted();
        }
        let ok = MutationResult { ok: true, ..Default::default() };
        let conflict = MutationResult {
            ok: false,
            error: Some(MutationError { code: ErrorCode::Conflict as i32, ..Default::default() }),
            ..Default::default()
        };
        counters.finished(MutationOp::Create, &ok);
        counters.finished(MutationOp::Update, &conflict);
        assert_eq!(counters.depth(), 1);
        assert_eq!(counters.outcomes(), vec![("create", "ok".to_owned(), 1), ("update", "conflict".to_owned(), 1)]);
    }

    #[test]
    fn ingest_counts_only_configured_sources() {
        let sources = ["Account".to_owned()];
        let counters = IngestCounters::new(&sources);
        counters.logged("Account", 5);
        counters.logged("Unknown", 7);
        counters.call(tonic::Code::Ok);
        counters.call(tonic::Code::Unauthenticated);
        assert_eq!(counters.records().collect::<Vec<_>>(), [("Account", 5)]);
        assert_eq!(counters.calls().collect::<Vec<_>>(), [("ok", 1), ("unauthenticated", 1)]);
    }
}
