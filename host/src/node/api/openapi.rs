//! `GET /v1/openapi.json`: the admin API's OpenAPI document.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub(super) async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi().to_string(),
    )
        .into_response()
}

/// The security scheme and the problem schema every route shares.
fn components() -> serde_json::Value {
    serde_json::json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "The operator token, a tenant token (`brink_…`), or a JWT from the identity server `[admin.jwt]` names"}},
        "schemas": {"Problem": {"type": "object", "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"}}}}
    })
}

/// The admin API's OpenAPI 3.1 document: every route the admin listener serves.
pub fn openapi() -> serde_json::Value {
    let problem = serde_json::json!({"description": "An RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let op = |summary: &str, ok: &str| {
        serde_json::json!({
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {
                ok: {"description": "Success"},
                "401": problem, "403": problem, "404": problem, "422": problem,
            }
        })
    };
    let name = serde_json::json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let with = |mut o: serde_json::Value, params: &[&serde_json::Value]| {
        o["parameters"] = serde_json::Value::Array(params.iter().map(|p| (*p).clone()).collect());
        o
    };
    let follow = serde_json::json!({"name": "follow", "in": "query", "required": false, "schema": {"type": "boolean"}});
    let id = serde_json::json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let token = serde_json::json!({"name": "token", "in": "path", "required": true, "schema": {"type": "string"}});
    let bucket = serde_json::json!({"name": "bucket", "in": "path", "required": true, "schema": {"type": "string"}});
    let key = serde_json::json!({"name": "key", "in": "path", "required": true, "schema": {"type": "string"}});
    let tenant = serde_json::json!({"name": "tenant", "in": "query", "required": false, "description": "The operator's view of a tenant's namespace", "schema": {"type": "string"}});
    let uplink = serde_json::json!({"name": "uplink", "in": "path", "required": true, "schema": {"type": "string"}});
    let after = serde_json::json!({"name": "after", "in": "query", "required": false, "description": "Only records after this seq", "schema": {"type": "integer"}});
    let limit = serde_json::json!({"name": "limit", "in": "query", "required": false, "description": "At most this many records (1000 at most)", "schema": {"type": "integer"}});
    let action = serde_json::json!({"name": "action", "in": "path", "required": true, "schema": {"type": "string", "enum": ["retry", "purge"]}});
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Brink admin API", "version": "1"},
        "components": components(),
        "paths": {
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/uploads": {"post": op("Upload a component (raw bytes, application/wasm); answers its digest", "201")},
            "/v1/pulls": {"post": op("Pull a component from an OCI registry [registry.oci] allows ({\"reference\": \"oci://…\"}); answers its digest and the manifest's name, version and signatures", "201")},
            "/v1/functions": {"get": op("The calling tenant's functions", "200")},
            "/v1/functions/{name}": {
                "get": with(op("A function: active version, earlier ones, every version", "200"), &[&name]),
                "delete": with(op("Remove a function and all its versions", "204"), &[&name]),
            },
            "/v1/functions/{name}/versions": {"post": with(op("Publish a version of an upload with its spec and signatures; activates it unless `activate` is false", "201"), &[&name])},
            "/v1/functions/{name}/activate": {"post": with(op("Activate a version (`1.2.3`, `^1.2`, `latest`); with `weight` (1-99), start a canary that takes that percentage of the events, picked by event id", "200"), &[&name])},
            "/v1/functions/{name}/rollback": {"post": with(op("End the canary, if there is one; else activate the previously active version", "200"), &[&name])},
            "/v1/functions/{name}/promote": {"post": with(op("Make the canary the active version", "200"), &[&name])},
            "/v1/functions/{name}/invoke": {"post": with(op("Invoke the function with one CloudEvent; answers its outputs", "200"), &[&name])},
            "/v1/functions/{name}/logs": {"get": with(op("The function's recent log records; `follow=true` (or Accept: text/event-stream) streams them and every new one as server-sent events, resumable with Last-Event-ID", "200"), &[&name, &follow])},
            "/v1/usage": {"get": op("Usage per tenant: invocations, execution time, functions", "200")},
            "/v1/tenants": {
                "get": op("Every tenant (operator)", "200"),
                "post": op("Create a tenant and its first token (operator)", "201"),
            },
            "/v1/tenants/{id}": {
                "get": with(op("A tenant: quota, grants, token ids", "200"), &[&id]),
                "patch": with(op("Change a tenant's quota or grants (operator)", "200"), &[&id]),
                "delete": with(op("Delete a tenant with its tokens, functions and key-value buckets (operator)", "200"), &[&id]),
            },
            "/v1/tenants/{id}/tokens": {"post": with(op("Issue another token (operator)", "201"), &[&id])},
            "/v1/tenants/{id}/tokens/{token}": {"delete": with(op("Revoke a token (operator)", "204"), &[&id, &token])},
            "/v1/gc": {"post": op("Delete blobs no version refers to, unpublished uploads included (operator)", "200")},
            "/v1/kv": {"get": with(op("Key-value buckets: a tenant's own; the operator's view is the app's, or a tenant's with `tenant`", "200"), &[&tenant])},
            "/v1/kv/{bucket}": {"get": with(op("Keys of a bucket (`prefix`, `cursor`)", "200"), &[&bucket, &tenant])},
            "/v1/kv/{bucket}/{key}": {
                "get": with(op("A value's bytes", "200"), &[&bucket, &key, &tenant]),
                "put": with(op("Set a value (`ttl_ms`)", "204"), &[&bucket, &key, &tenant]),
                "delete": with(op("Remove a value", "204"), &[&bucket, &key, &tenant]),
            },
            "/v1/metrics": {"get": op("Every metric in the Prometheus text format, tenants' included (operator); the public /metrics has node-wide figures only", "200")},
            "/v1/outbox": {"get": op("Uplink queues: every one for the operator, the granted ones for a tenant", "200")},
            "/v1/outbox/{uplink}/purge": {"post": with(op("Drop what is queued for an uplink (operator)", "200"), &[&uplink])},
            "/v1/outbox/{uplink}/parked": {"get": with(op("Events the uplink refused for good, with the reason and the time (a tenant sees its own)", "200"), &[&uplink])},
            "/v1/stats": {"get": op("Each function's invocations, errors, outputs, p99 and queue, and each model's requests (the operator sees every function, a tenant its own)", "200")},
            "/v1/node": {"get": op("What the node is and has: version, uptime, machine, disk free under the data directory, NVIDIA GPUs (NVML) and ONNX Runtime's providers, and where each model runs (a GPU→CPU fallback says why)", "200")},
            "/v1/audit": {"get": with(op("The audit ledger's records, each with the sha256 of the one before and the node's signature: every one for the operator, those that concern it for a tenant; `key` is the node's public key", "200"), &[&after, &limit])},
            "/v1/outbox/{uplink}/parked/{action}": {"post": with(op("`retry`: move parked events back to the queue; `purge`: drop them (operator; body `{\"seqs\": [..]}` picks some)", "200"), &[&uplink, &action])},
        }
    })
}
