//! RFC 9457 problem answers: what every HTTP listener of the node (the
//! event trigger and the admin API) and the deployer say when a request fails.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use brink_registry::RegistryError;

use super::dispatch::DispatchError;

/// An error answer of the admin API: an RFC 9457 problem.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    /// The audit ledger's action for this refusal, where it is more than
    /// the route's (a publish refused for its signatures).
    pub(crate) audit_as: Option<&'static str>,
}

/// On a problem response: its detail, for the audit ledger's outcome.
#[derive(Debug, Clone)]
pub(crate) struct ProblemDetail(pub(crate) String);

/// On a problem response: [`Problem::audit_as`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditAs(pub(crate) &'static str);

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        title: &'static str,
        detail: impl std::fmt::Display,
    ) -> Self {
        Self {
            status,
            title,
            detail: detail.to_string(),
            audit_as: None,
        }
    }

    /// Records this refusal in the audit ledger as `action`.
    pub(crate) fn audited_as(mut self, action: &'static str) -> Self {
        self.audit_as = Some(action);
        self
    }

    pub(crate) fn forbidden(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Not allowed", detail)
    }

    pub(crate) fn invalid(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid deployment",
            detail,
        )
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = problem(self.status, self.title, self.detail);
        if let Some(action) = self.audit_as {
            response.extensions_mut().insert(AuditAs(action));
        }
        response
    }
}

/// An RFC 9457 problem response.
pub(crate) fn problem(status: StatusCode, title: &str, detail: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.to_string(),
    });
    let mut response = (status, body.to_string()).into_response();
    if let Some(detail) = body["detail"].as_str() {
        response
            .extensions_mut()
            .insert(ProblemDetail(detail.to_owned()));
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Why a body could not be read; a 413 names `limit`, the setting that bounds it.
pub(crate) fn body_problem(rejection: BytesRejection, limit: &str) -> Response {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return problem(
            status,
            "Request body too large",
            format!("the request body is over {limit}; send less, or raise the limit"),
        );
    }
    problem(status, "Unreadable request body", rejection.body_text())
}

pub(crate) fn dispatch_problem(e: &DispatchError) -> Response {
    match e {
        DispatchError::UnknownFunction(_) => problem(StatusCode::NOT_FOUND, "No such function", e),
        DispatchError::RateLimited { .. } => {
            let mut response = problem(StatusCode::TOO_MANY_REQUESTS, "Quota exceeded", e);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        DispatchError::Overloaded { .. }
        | DispatchError::Invoke(crate::error::InvokeError::Busy { .. }) => {
            let mut response = problem(StatusCode::SERVICE_UNAVAILABLE, "Function overloaded", e);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        e if e.is_bad_event() => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Event rejected by the function",
            e,
        ),
        _ => problem(StatusCode::BAD_GATEWAY, "Function failed", e),
    }
}

impl From<RegistryError> for Problem {
    fn from(e: RegistryError) -> Self {
        let (status, title) = match &e {
            RegistryError::NoFunction(_) | RegistryError::NoVersion { .. } => {
                (StatusCode::NOT_FOUND, "Not found")
            }
            RegistryError::Conflict { .. } | RegistryError::VersionActive { .. } => {
                (StatusCode::CONFLICT, "Conflict")
            }
            RegistryError::NothingToRollBackTo { .. } => {
                (StatusCode::CONFLICT, "Nothing to roll back to")
            }
            RegistryError::Canary(_) => (StatusCode::CONFLICT, "Canary refused"),
            RegistryError::InvalidName(_)
            | RegistryError::InvalidVersion(..)
            | RegistryError::InvalidRequirement(..)
            | RegistryError::InvalidDigest(_)
            | RegistryError::BlobMissing(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid request")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Registry failed"),
        };
        Self::new(status, title, e)
    }
}

impl From<crate::kv::KvError> for Problem {
    fn from(e: crate::kv::KvError) -> Self {
        let (status, title) = match &e {
            crate::kv::KvError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Store failed"),
            crate::kv::KvError::QuotaExceeded { .. }
            | crate::kv::KvError::NamespaceQuotaExceeded { .. } => {
                (StatusCode::INSUFFICIENT_STORAGE, "Quota exceeded")
            }
            crate::kv::KvError::TooManyBuckets { .. } => {
                (StatusCode::FORBIDDEN, "Bucket quota reached")
            }
            crate::kv::KvError::ValueTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "Value too large")
            }
            crate::kv::KvError::NoSuchBucket(_) => (StatusCode::NOT_FOUND, "No such bucket"),
            _ => (StatusCode::BAD_REQUEST, "Invalid key-value request"),
        };
        Self::new(status, title, e)
    }
}
