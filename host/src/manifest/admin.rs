//! `[admin]` and `[admin.jwt]`: the admin API's listener and who may call it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Invalid;

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `listen = "127.0.0.1:7070"`: where the admin API listens.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// `token = "…"`: a bearer token every admin call must carry; required
    /// when `listen` is not a loopback address. A node with `[registry]`
    /// and neither this nor `[admin.jwt]` makes one at first start, in the
    /// data directory's `operator-token` (readable only by its user): where
    /// tenants exist, a call without a token is never the operator's.
    pub token: Option<String>,
    /// `token_file = "/run/credentials/brink.service/admin-token"`: the
    /// token, read from this file at start instead of written here (a
    /// Kubernetes Secret's mount, systemd's `LoadCredential=`), so the
    /// manifest can be shared; relative to the manifest. Surrounding white
    /// space is trimmed; an empty file is refused.
    pub token_file: Option<PathBuf>,
    /// `[admin.jwt]`: also accept JWTs from an identity server.
    pub jwt: Option<JwtSection>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
            token_file: None,
            jwt: None,
        }
    }
}

/// `[admin.jwt]`: JWT bearer tokens from an identity server such as
/// Keycloak, verified against its public keys (no network call).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// `jwks_file = "keycloak-jwks.json"`: the identity server's JWKS
    /// (its `.../protocol/openid-connect/certs` document), relative to the
    /// manifest. Read again when a token names a key it lacks (rotation).
    pub jwks_file: PathBuf,
    /// `issuer = "https://id.example.com/realms/edge"`: the `iss` every
    /// token must carry.
    pub issuer: String,
    /// `audience = "brink"`: an `aud` every token must carry [default: `aud`
    /// not checked].
    pub audience: Option<String>,
    /// `tenant_claim = "brink_tenant"`: the claim that names the caller's
    /// tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// `operator_role = "brink-operator"`: a role (in `roles` or Keycloak's
    /// `realm_access.roles`) that makes the caller the operator.
    #[serde(default = "default_operator_role")]
    pub operator_role: String,
    /// `leeway_s = 30`: clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: Option<u64>,
}

fn default_tenant_claim() -> String {
    "brink_tenant".to_owned()
}

fn default_operator_role() -> String {
    "brink-operator".to_owned()
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

impl AdminSection {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(jwt) = &self.jwt {
            for (field, value) in [
                ("issuer", &jwt.issuer),
                ("tenant_claim", &jwt.tenant_claim),
                ("operator_role", &jwt.operator_role),
            ] {
                if value.trim().is_empty() {
                    return Err(Invalid::at(
                        format!("admin.jwt.{field}"),
                        format!("admin.jwt.{field}: must not be empty"),
                    ));
                }
            }
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(Invalid::at(
                "admin.token_file",
                "admin.token and admin.token_file are both set: keep one (token_file keeps the secret out of the manifest)",
            ));
        }
        if !self.listen.ip().is_loopback() && self.token.is_none() && self.token_file.is_none() {
            return Err(Invalid::at(
                "admin.listen",
                format!(
                    "admin.listen {} is not a loopback address: set admin.token or admin.token_file, so that not anyone who can reach it can change this node's state",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}
