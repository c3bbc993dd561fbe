//! Where each tenant's things live: its routes, HTTP paths, MQTT topics,
//! key-value namespace and dead letters. Tenant isolation rests on these
//! names never overlapping, so every rule that makes one is here.

/// What a tenant's key-value namespace starts with (`:` appears in no app name).
pub const TENANT_NAMESPACE: &str = "tenant:";

/// Dead letters of the manifest's function `f` go to `brink/dead-letter/f`.
pub const DEAD_LETTER_PREFIX: &str = "brink/dead-letter/";

/// The namespace of a tenant's key-value buckets.
pub fn kv_namespace(tenant: &str) -> String {
    format!("{TENANT_NAMESPACE}{tenant}")
}

/// The tenant whose namespace `namespace` is, if it is a tenant's.
pub fn tenant_of_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix(TENANT_NAMESPACE)
}

/// The dispatcher's name for a tenant's function: `<tenant>/<name>`.
pub fn route_name(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

/// The HTTP path prefix under which a tenant's events arrive: `/t/<tenant>/`.
pub fn tenant_path_prefix(tenant: &str) -> String {
    format!("/t/{tenant}/")
}

/// The MQTT topics a tenant owns: `t/<tenant>/`.
pub fn tenant_topic_prefix(tenant: &str) -> String {
    format!("t/{tenant}/")
}

/// Where the dead letters of `function` go: `brink/dead-letter/<f>` for the
/// manifest's functions, and inside the tenant's own topics,
/// `t/<tenant>/dead-letter/<f>`, for a tenant's (routed as `<tenant>/<f>`),
/// so a tenant can read its failures and nobody else's.
pub fn dead_letter_topic(function: &str) -> String {
    match function.split_once('/') {
        Some((tenant, name)) => format!("{}dead-letter/{name}", tenant_topic_prefix(tenant)),
        None => format!("{DEAD_LETTER_PREFIX}{function}"),
    }
}
