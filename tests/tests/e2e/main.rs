//! Syncline end to end: real servers on 127.0.0.1 port 0, real sockets, real channels.
//!
//! One test binary for the whole package (each file is a module): 32 binaries each linking
//! the server, the device library and their dependencies cost minutes of link time and
//! gigabytes of disk on a 2-core CI machine. nextest still runs every test in its own process.

mod admin_api;
mod admin_data;
mod admin_users;
mod backend_tokens;
mod blobs;
mod bulk;
mod cli_admin;
mod cli_users;
mod cluster_failover;
mod cluster_nodes;
mod cluster_sim_failover;
mod connections;
mod cors;
mod crash_recovery;
mod crm_channel;
mod device_commands;
mod ingest_isolation;
mod ingest_validation;
mod json_values;
mod login_limits;
mod metrics;
mod mutated_frames;
mod page_bytes;
mod personal_scenario;
mod protocol_errors;
mod python_channel;
mod record_limits;
mod redis_store;
mod rpc;
mod s3_blobs;
mod s3_bulk;
mod schema_changes;
mod sim_scenarios;
mod sync_e2e;
mod tls_and_shutdown;
