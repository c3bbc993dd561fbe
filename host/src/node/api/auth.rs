//! Who is calling the admin API: the operator, or a tenant. One bearer token
//! per call, checked in this order:
//!
//! 1. the operator token (`[admin] token`);
//! 2. a JWT from an identity server such as Keycloak (`[admin.jwt]`),
//!    verified against the keys of a JWKS file: the `operator_role` in its
//!    roles makes it the operator, else its `tenant_claim` names a tenant;
//! 3. a tenant token (`brink_…`, stored hashed).
//!
//! A call without any token is the operator's only on a node with no
//! tenants, no JWT sign-in and no operator token, whose manifest then keeps
//! the admin API on loopback. Where tenants exist, loopback is never a
//! credential: a node with `[registry]` and neither `[admin] token` nor
//! `[admin.jwt]` makes an operator token at first start
//! ([`generated_operator_token`]), and every call must carry a token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::manifest::JwtSection;
use crate::node::problem::Problem;
use crate::tenancy::{TenantError, TenantRecord, Tenants};

/// The operator token from `[admin] token_file`, trimmed. A missing,
/// unreadable or empty file stops the start: a node that cannot tell its
/// operator apart must not serve the admin API.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading admin.token_file {}: create it with the operator token, or point token_file at the secret's mount",
            path.display()
        )
    })?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "admin.token_file {} is empty: write the operator token into it",
        path.display()
    );
    Ok(token.to_owned())
}

/// The operator token of a node with tenants and no configured operator
/// credential: made at first start (32 random bytes), kept in
/// `data_dir/operator-token` readable only by the node's user, and read
/// back at every later start. Its path is logged, never the token.
pub fn generated_operator_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("operator-token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            tracing::info!(
                path = %path.display(),
                "admin: operator token from the data directory (no [admin] token)"
            );
            return Ok(token.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).context("no randomness for the operator token")?;
    let token = format!("brinkop_{}", hex::encode(bytes));
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "admin: this node has tenants but no [admin] token or [admin.jwt]; made an operator token, readable only by this user, in the file named here (`brink login <url> --token $(cat <file>)`)"
    );
    Ok(token)
}

/// The caller of an admin route, as the authentication layer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Tenant(String),
}

/// Checks bearer tokens; shared by every admin route.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

#[derive(Debug)]
struct AuthInner {
    operator_token: Option<String>,
    tenants: Option<Tenants>,
    jwt: Option<JwtVerifier>,
}

impl Auth {
    /// Tokens checked against `operator_token`, `jwt` and the tenants' tokens.
    pub fn new(
        operator_token: Option<String>,
        tenants: Option<Tenants>,
        jwt: Option<JwtVerifier>,
    ) -> Self {
        Self {
            inner: Arc::new(AuthInner {
                operator_token,
                tenants,
                jwt,
            }),
        }
    }

    /// The principal `authorization` (the header's value, if any) stands for.
    pub(super) fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, Problem> {
        let inner = &self.inner;
        let token = match authorization {
            None if inner.operator_token.is_none()
                && inner.tenants.is_none()
                && inner.jwt.is_none() =>
            {
                return Ok(Principal::Operator);
            }
            None => return Err(unauthorized("no `Authorization: Bearer <token>` header")),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?,
        };
        if let Some(op) = &inner.operator_token
            && constant_time_eq(token.as_bytes(), op.as_bytes())
        {
            return Ok(Principal::Operator);
        }
        if let Some(jwt) = &inner.jwt
            && token.split('.').count() == 3
        {
            let principal = jwt.verify(token).map_err(|e| unauthorized(&e))?;
            if let Principal::Tenant(id) = &principal {
                self.known_tenant(id)?;
            }
            return Ok(principal);
        }
        let found = match &inner.tenants {
            Some(tenants) => tenants.authenticate(token)?,
            None => None,
        };
        match found {
            Some((tenant, _)) => Ok(Principal::Tenant(tenant)),
            None => Err(unauthorized(
                "the token is not the operator's, nor a valid, unrevoked tenant token",
            )),
        }
    }

    fn known_tenant(&self, id: &str) -> Result<(), Problem> {
        match self.tenant(id) {
            Ok(_) => Ok(()),
            Err(e) if e.status == StatusCode::NOT_FOUND => Err(unauthorized(&format!(
                "the token's tenant `{id}` does not exist on this node"
            ))),
            Err(e) => Err(e),
        }
    }

    /// The record of tenant `id`.
    pub(super) fn tenant(&self, id: &str) -> Result<TenantRecord, Problem> {
        match &self.inner.tenants {
            Some(tenants) => Ok(tenants.get(id)?),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "Not found",
                "this node has no tenants (no [registry] section)",
            )),
        }
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
}

/// Compares without an early exit, so timing does not reveal the token.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The layer in front of every admin route: puts the [`Principal`] in the
/// request's extensions, or answers 401.
pub async fn middleware(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    match auth.authenticate(request.headers().get(header::AUTHORIZATION)) {
        Ok(principal) => {
            request.extensions_mut().insert(principal.clone());
            let mut response = next.run(request).await;
            // For the audit layer outside this one.
            response.extensions_mut().insert(principal);
            response
        }
        Err(e) => {
            let unauthorized = e.status == StatusCode::UNAUTHORIZED;
            let mut response = e.into_response();
            if unauthorized {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// The principal the layer found.
pub(super) fn principal(extensions: &axum::http::Extensions) -> Result<Principal, Problem> {
    extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Problem::internal("no principal on an authenticated request"))
}

/// Refuses anyone but the operator.
pub(super) fn operator(extensions: &axum::http::Extensions, what: &str) -> Result<(), Problem> {
    match principal(extensions)? {
        Principal::Operator => Ok(()),
        Principal::Tenant(id) => Err(Problem::forbidden(format!(
            "tenant `{id}` may not {what}: this call needs the operator"
        ))),
    }
}

/// How long a token's unknown `kid` waits before the JWKS file is read
/// again (the identity server rotated its keys), so a flood of bogus kids
/// cannot keep the node re-reading the file.
const RELOAD_AFTER: Duration = Duration::from_secs(5);

/// Verifies JWTs against the keys of a JWKS file.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSection,
    path: PathBuf,
    keys: RwLock<(Instant, JwkSet)>,
}

impl JwtVerifier {
    /// Reads the JWKS file `settings.jwks_file` (relative to `base`).
    pub fn open(settings: &JwtSection, base: &Path) -> anyhow::Result<Self> {
        // Exactly one backend is built in; installing it makes the choice
        // explicit rather than inferred on first use.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let path = base.join(&settings.jwks_file);
        let keys = read_jwks(&path)?;
        Ok(Self {
            settings: settings.clone(),
            path,
            keys: RwLock::new((Instant::now(), keys)),
        })
    }

    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, String> {
        let find = |set: &JwkSet| -> Option<Jwk> {
            let usable: Vec<&Jwk> = set.keys.iter().filter(|k| signs_with(k, alg)).collect();
            match kid {
                Some(kid) => usable
                    .into_iter()
                    .find(|k| k.common.key_id.as_deref() == Some(kid))
                    .cloned(),
                // A token without `kid` is fine only when one key can verify it.
                None if usable.len() == 1 => usable.first().map(|k| (*k).clone()),
                None => None,
            }
        };
        {
            let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(key) = find(&keys.1) {
                return Ok(key);
            }
            if keys.0.elapsed() < RELOAD_AFTER {
                return Err(no_key(kid, alg));
            }
        }
        let fresh = read_jwks(&self.path).map_err(|e| format!("{e:#}"))?;
        let found = find(&fresh);
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), fresh);
        found.ok_or_else(|| no_key(kid, alg))
    }

    /// The principal a valid token stands for, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("not a valid JWT: {e}"))?;
        if header.alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(format!(
                "JWT algorithm {:?} is a shared secret; only public-key algorithms (RS*, PS*, ES*, EdDSA) are accepted",
                header.alg
            ));
        }
        let jwk = self.key_for(header.kid.as_deref(), header.alg)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("JWKS key: {e}"))?;
        let s = &self.settings;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&s.issuer]);
        match &s.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&["exp", "iss"]);
        // A token not valid yet (`nbf` ahead of the clock, past the same
        // leeway as `exp`) is refused: it was issued for later, not now.
        validation.validate_nbf = true;
        validation.leeway = s.leeway_s.unwrap_or(30);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| format!("JWT refused: {e}"))?;
        let claims = data.claims;
        let roles = claims["roles"]
            .as_array()
            .into_iter()
            .chain(claims["realm_access"]["roles"].as_array())
            .flatten();
        if roles
            .filter_map(|r| r.as_str())
            .any(|r| r == s.operator_role)
        {
            return Ok(Principal::Operator);
        }
        match claims[s.tenant_claim.as_str()].as_str() {
            Some(tenant) if !tenant.is_empty() => Ok(Principal::Tenant(tenant.to_owned())),
            _ => Err(format!(
                "the JWT has neither the role `{}` nor a `{}` claim naming a tenant",
                s.operator_role, s.tenant_claim
            )),
        }
    }
}

fn no_key(kid: Option<&str>, alg: Algorithm) -> String {
    match kid {
        Some(kid) => format!("no {alg:?} signing key with kid `{kid}` in the node's JWKS"),
        None => format!(
            "the JWT has no kid, and the node's JWKS has not exactly one {alg:?} signing key"
        ),
    }
}

/// Whether `key` is a signing key for `alg`.
fn signs_with(key: &Jwk, alg: Algorithm) -> bool {
    if matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    if let Some(declared) = key.common.key_algorithm
        && (declared == KeyAlgorithm::UNKNOWN_ALGORITHM
            || format!("{declared:?}") != format!("{alg:?}"))
    {
        return false;
    }
    use jsonwebtoken::AlgorithmFamily as F;
    matches!(
        (&key.algorithm, alg.family()),
        (AlgorithmParameters::RSA(_), F::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), F::Ec)
            | (AlgorithmParameters::OctetKeyPair(_), F::Ed)
    )
}

fn read_jwks(path: &Path) -> anyhow::Result<JwkSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the JWKS file {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JWKS document", path.display()))?;
    anyhow::ensure!(
        set.keys.iter().any(|k| !matches!(
            k.algorithm,
            AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
        )),
        "{} has no public signing key (RSA, EC or OKP)",
        path.display()
    );
    Ok(set)
}

impl From<TenantError> for Problem {
    fn from(e: TenantError) -> Self {
        let (status, title) = match &e {
            TenantError::InvalidId(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid tenant"),
            TenantError::InvalidGrant(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid grant"),
            TenantError::Exists(_) => (StatusCode::CONFLICT, "Conflict"),
            TenantError::Unknown(_) | TenantError::UnknownToken { .. } => {
                (StatusCode::NOT_FOUND, "Not found")
            }
            TenantError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Store failed"),
        };
        Self::new(status, title, e)
    }
}
