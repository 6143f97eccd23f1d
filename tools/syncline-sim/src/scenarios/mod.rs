//! One module per subcommand: its arguments, its run and its report.

pub(crate) mod blobs;
pub(crate) mod idle;
pub(crate) mod ingest;
pub(crate) mod initial_sync;
pub(crate) mod latency;
pub(crate) mod login_storm;
pub(crate) mod mutations;
pub(crate) mod personal;
pub(crate) mod rpc;
pub(crate) mod slow;
pub(crate) mod storm;
pub(crate) mod watch;
