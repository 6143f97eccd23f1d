//! [`CrmBusiness`]: the CRM's business operations as the mobile RPC service `crm`, written
//! with the Mobile RPC SDK (`syncline_proto::mobile_sdk`). Payloads are JSON.
//!
//! `crm.CloseDeal` with `{"account_id": "acc-1", "amount": 5000.0}` changes several records
//! in one SQLite transaction ([`CrmDb::close_deal`]) and answers
//! `{"account_id": "acc-1", "annual_revenue": 17500.5, "contacts_updated": 2}`. The changed
//! records reach devices through the change feed like any other write.

use serde::{Deserialize, Serialize};
use syncline_proto::mobile_sdk::{self, Invocation, MobileBackend, MobileError};
use syncline_proto::sdk::ChannelError;
use syncline_proto::v1::value::Kind;

use crate::db::CrmDb;

/// The service name these operations answer to.
pub const CRM_SERVICE: &str = "crm";

/// The CRM's business operations.
#[derive(Clone)]
pub struct CrmBusiness {
    db: CrmDb,
}

impl CrmBusiness {
    /// Returns the operations over `db`.
    pub fn new(db: CrmDb) -> Self {
        Self { db }
    }
}

/// The request of `CloseDeal`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseDealRequest {
    account_id: String,
    amount: f64,
}

/// The reply of `CloseDeal`.
#[derive(Debug, Serialize)]
struct CloseDealReply {
    account_id: String,
    annual_revenue: f64,
    contacts_updated: usize,
}

/// Returns the business error of a database error (same kinds, by what the caller can do).
fn business_error(error: ChannelError) -> MobileError {
    match error {
        ChannelError::InvalidArgument(message)
        | ChannelError::AlreadyExists(message)
        | ChannelError::FailedPrecondition(message) => MobileError::InvalidArgument(message),
        ChannelError::NotFound(message) => MobileError::NotFound(message),
        ChannelError::PermissionDenied(message) | ChannelError::Unauthenticated(message) => {
            MobileError::PermissionDenied(message)
        }
        ChannelError::Unavailable(message) => MobileError::Unavailable(message),
        ChannelError::DeadlineExceeded(message) => MobileError::DeadlineExceeded(message),
        ChannelError::Unimplemented(message) | ChannelError::Internal(message) => MobileError::Internal(message),
    }
}

#[tonic::async_trait]
impl MobileBackend for CrmBusiness {
    async fn invoke(&self, call: Invocation) -> mobile_sdk::Result<Vec<u8>> {
        match (call.service.as_str(), call.method.as_str()) {
            (CRM_SERVICE, "CloseDeal") => {
                let request: CloseDealRequest = serde_json::from_slice(&call.payload).map_err(|error| {
                    MobileError::InvalidArgument(format!(
                        "CloseDeal takes {{\"account_id\": string, \"amount\": number}}: {error}"
                    ))
                })?;
                let closed = self
                    .db
                    .close_deal(&call.caller.user_id, &request.account_id, request.amount)
                    .await
                    .map_err(business_error)?;
                let annual_revenue = match closed.account.fields.get("annual_revenue").and_then(|v| v.kind.as_ref()) {
                    Some(Kind::DoubleValue(revenue)) => *revenue,
                    _ => 0.0,
                };
                let reply = CloseDealReply {
                    account_id: closed.account.id,
                    annual_revenue,
                    contacts_updated: closed.contacts_updated,
                };
                serde_json::to_vec(&reply)
                    .map_err(|error| MobileError::Internal(format!("encoding the reply: {error}")))
            }
            _ => Err(call.unknown_method()),
        }
    }
}
