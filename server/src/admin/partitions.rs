//! Partitions, their records and changes (filled in by the resource's endpoints).

use utoipa_axum::router::OpenApiRouter;

use super::AdminState;

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
}
