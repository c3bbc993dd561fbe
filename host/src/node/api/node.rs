//! `GET /v1/node`: what the node is and has (`brink status`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;

use super::auth::Auth;
use super::{Answer, json};
use crate::node::facts::Facts;
use crate::node::problem::Problem;

/// Any principal may read it: it names the machine, never a tenant's doings.
async fn node(State(facts): State<Facts>) -> Answer {
    let now = tokio::task::spawn_blocking(move || facts.collect())
        .await
        .map_err(Problem::internal)?;
    json(StatusCode::OK, &now)
}

/// `GET /v1/node`, behind `auth`.
pub(crate) fn router(facts: Facts, auth: Auth) -> Router {
    Router::new()
        .route("/v1/node", get(node))
        .layer(middleware::from_fn_with_state(
            auth,
            super::auth::middleware,
        ))
        .with_state(facts)
}
