//! The admin API's side of the audit ledger: the layer that records every
//! call that changes the node (and every refused sign-in, rate-limited),
//! and `GET /v1/audit`, which shows operators every record and tenants the
//! records that concern them.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;

use super::auth::{Auth, Principal, principal};
use super::{Answer, json};
use crate::audit::{Audit, Entry};
use crate::node::problem::{AuditAs, Problem, ProblemDetail};

/// What a handler adds to its answer for the ledger: a fuller target
/// (`filter@1.0.0` where the path says only `filter`) and a detail.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditNote {
    pub(crate) target: Option<String>,
    pub(crate) detail: Option<String>,
}

/// `response` with `note` for the ledger.
pub(crate) fn noted(mut response: Response, target: Option<String>, detail: String) -> Response {
    response.extensions_mut().insert(AuditNote {
        target,
        detail: Some(detail),
    });
    response
}

/// The ledger's action for a call: only calls that change something.
/// Invoking a function is the data path, not a change to the node.
fn action_of(method: &Method, route: &str, params: &[&str]) -> Option<String> {
    let action = match (method.as_str(), route) {
        ("POST", "/v1/uploads") => "component.upload",
        ("POST", "/v1/pulls") => "component.pull",
        ("POST", "/v1/functions/{name}/versions") => "function.publish",
        ("DELETE", "/v1/functions/{name}") => "function.rm",
        ("POST", "/v1/functions/{name}/activate") => "function.activate",
        ("POST", "/v1/functions/{name}/rollback") => "function.rollback",
        ("POST", "/v1/functions/{name}/promote") => "function.promote",
        ("POST", "/v1/tenants") => "tenant.create",
        ("PATCH", "/v1/tenants/{id}") => "tenant.update",
        ("DELETE", "/v1/tenants/{id}") => "tenant.delete",
        ("POST", "/v1/tenants/{id}/tokens") => "token.issue",
        ("DELETE", "/v1/tenants/{id}/tokens/{token}") => "token.revoke",
        ("POST", "/v1/gc") => "registry.gc",
        ("POST", "/v1/outbox/{uplink}/purge") => "outbox.purge",
        ("POST", "/v1/outbox/{uplink}/parked/{action}") => {
            return Some(format!("outbox.parked.{}", params.get(1).unwrap_or(&"?")));
        }
        ("PUT", "/v1/kv/{bucket}/{*key}") => "kv.set",
        ("DELETE", "/v1/kv/{bucket}/{*key}") => "kv.del",
        _ => return None,
    };
    Some(action.to_owned())
}

/// The values of `route`'s parameters in `path`, in order; a trailing
/// `{*rest}` takes the rest of the path.
fn params<'a>(route: &str, path: &'a str) -> Vec<&'a str> {
    let parts = route.split('/').count();
    route
        .split('/')
        .zip(path.splitn(parts, '/'))
        .filter(|(part, _)| part.starts_with('{'))
        .map(|(_, value)| value)
        .collect()
}

/// The layer outside authentication on every admin route.
pub(crate) async fn record(State(audit): State<Audit>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let entry = match route {
        Some(route) => entry_for(&audit, &method, &route, &path, &response),
        None => None,
    };
    if let Some(entry) = entry {
        audit.record_async(entry).await;
    }
    response
}

fn entry_for(
    audit: &Audit,
    method: &Method,
    route: &str,
    path: &str,
    response: &Response,
) -> Option<Entry> {
    let status = response.status();
    let detail = response
        .extensions()
        .get::<ProblemDetail>()
        .map(|d| d.0.clone());
    if status == StatusCode::UNAUTHORIZED {
        return audit.refused_sign_in(Entry {
            principal: "unauthenticated".into(),
            action: "auth.refused".into(),
            target: format!("{method} {path}"),
            outcome: "401".into(),
            tenant: None,
            detail: detail.unwrap_or_default(),
        });
    }
    let params = params(route, path);
    let action = match response.extensions().get::<AuditAs>() {
        Some(AuditAs(action)) => (*action).to_owned(),
        None => action_of(method, route, &params)?,
    };
    let who = response.extensions().get::<Principal>();
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let tenant = match who {
        Some(Principal::Tenant(id)) => Some(id.clone()),
        // The operator's calls on a tenant concern that tenant.
        _ if route.starts_with("/v1/tenants/") => params.first().map(|s| (*s).to_owned()),
        _ if route == "/v1/tenants" => note.target.clone(),
        _ => None,
    };
    let target = note.target.unwrap_or_else(|| params.join("/"));
    let target = match (&who, route.starts_with("/v1/functions/")) {
        (Some(Principal::Tenant(id)), true) => format!("{id}/{target}"),
        _ => target,
    };
    let outcome = if status.is_success() {
        "ok".to_owned()
    } else {
        status.as_u16().to_string()
    };
    Some(Entry {
        principal: match who {
            Some(Principal::Operator) => "operator".into(),
            Some(Principal::Tenant(id)) => format!("tenant:{id}"),
            None => "unknown".into(),
        },
        action,
        target,
        outcome,
        tenant,
        detail: detail.or(note.detail).unwrap_or_default(),
    })
}

/// `brink audit ls`'s pages: at most this many records per call.
const MAX_PAGE: usize = 1000;

/// `GET /v1/audit?after=N&limit=M`.
async fn list(
    State(audit): State<Audit>,
    extensions: axum::http::Extensions,
    uri: axum::http::Uri,
) -> Answer {
    let query = uri.query();
    let number = |name: &str| -> Result<Option<u64>, Problem> {
        super::state::query_param(query, name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "Bad query",
                        format!("`{name}` must be a whole number, not `{v}`"),
                    )
                })
            })
            .transpose()
    };
    let after = number("after")?.unwrap_or(0);
    let limit = number("limit")?.map_or(MAX_PAGE, |l| (l as usize).min(MAX_PAGE));
    let tenant = match principal(&extensions)? {
        Principal::Tenant(id) => Some(id),
        Principal::Operator => None,
    };
    let key = audit.public_key().to_string();
    let records = tokio::task::spawn_blocking(move || audit.read(after, limit, tenant.as_deref()))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| Problem::internal(format!("{e:#}")))?;
    json(
        StatusCode::OK,
        &serde_json::json!({ "key": key, "records": records }),
    )
}

/// `GET /v1/audit`, behind `auth`.
pub(crate) fn router(audit: Audit, auth: Auth) -> Router {
    Router::new()
        .route("/v1/audit", get(list))
        .layer(middleware::from_fn_with_state(
            auth,
            super::auth::middleware,
        ))
        .with_state(audit)
}

/// `app` with every route recorded in `audit`.
pub(crate) fn recorded(app: Router, audit: Option<Audit>) -> Router {
    match audit {
        Some(audit) => app.layer(middleware::from_fn_with_state(audit, record)),
        None => app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_s_parameters_are_read_from_the_path() {
        assert_eq!(
            params(
                "/v1/functions/{name}/activate",
                "/v1/functions/filter/activate"
            ),
            ["filter"]
        );
        assert_eq!(
            params("/v1/kv/{bucket}/{*key}", "/v1/kv/devices/a/b/c"),
            ["devices", "a/b/c"]
        );
        assert_eq!(
            params(
                "/v1/tenants/{id}/tokens/{token}",
                "/v1/tenants/acme/tokens/ab12"
            ),
            ["acme", "ab12"]
        );
    }

    #[test]
    fn reads_and_invocations_are_not_recorded_but_changes_are() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(action_of(&get, "/v1/functions/{name}", &["f"]), None);
        assert_eq!(
            action_of(&post, "/v1/functions/{name}/invoke", &["f"]),
            None
        );
        assert_eq!(
            action_of(&post, "/v1/functions/{name}/activate", &["f"]).as_deref(),
            Some("function.activate")
        );
        assert_eq!(
            action_of(
                &post,
                "/v1/outbox/{uplink}/parked/{action}",
                &["cloud", "retry"]
            )
            .as_deref(),
            Some("outbox.parked.retry")
        );
    }
}
