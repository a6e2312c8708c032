//! Liveness and readiness probes, for load balancers and orchestrators.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is alive and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = ProbeResponse)))]
pub async fn get_healthz() -> Json<ProbeResponse> {
    Json(ProbeResponse { status: "ok" })
}

/// The process can serve requests: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready", body = ProbeResponse),
    (status = 503, description = "`database_unavailable`", body = ErrorBody)))]
pub async fn get_readyz(State(state): State<AppState>) -> Result<Json<ProbeResponse>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer",
        )
    })?;
    Ok(Json(ProbeResponse { status: "ready" }))
}
