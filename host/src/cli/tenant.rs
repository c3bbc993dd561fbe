//! `brink tenant ...`: the operator's tenants, their quotas, grants and tokens.

use serde_json::json;

use super::client::Remote;

use clap::Subcommand;

/// `brink tenant create`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub id: String,
    #[arg(long)]
    pub max_functions: Option<u32>,
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    #[arg(long)]
    pub max_invocations_per_s: Option<u32>,
    /// Key-value bytes across all the tenant's buckets, in MiB.
    #[arg(long)]
    pub max_kv_mb: Option<u64>,
    /// A model of the node the tenant's functions may use (repeatable).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// An uplink of the node the tenant's functions may send to (repeatable).
    #[arg(long = "uplink")]
    pub uplinks: Vec<String>,
    /// Let the tenant's functions post to webhooks.
    #[arg(long)]
    pub webhooks: bool,
    /// An MQTT topic prefix beyond `t/<tenant>/` its functions may use,
    /// such as `plant1/line3/` (repeatable).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Bytes its functions may keep queued in the node's outboxes, in MiB.
    #[arg(long)]
    pub max_outbox_mb: Option<u64>,
    /// Invocations of its functions running at once: its share of the pool.
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// The longest `limits.timeout_ms` its functions may ask for.
    #[arg(long)]
    pub max_timeout_ms: Option<u64>,
    /// Key-value buckets it may have.
    #[arg(long)]
    pub max_buckets: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its first token (shown only once).
    Create(CreateArgs),
    /// Every tenant, with quotas and token ids.
    Ls,
    /// Issue another token for a tenant (shown only once).
    Token { id: String },
    /// Revoke one of a tenant's tokens, by its id (`brink tenant ls` shows them).
    RevokeToken { id: String, token_id: String },
    /// Delete a tenant with its tokens, functions and key-value buckets.
    Rm { id: String },
}

/// `brink tenant ...` (operator).
pub async fn tenant(remote: &Remote, command: TenantCommand) -> anyhow::Result<()> {
    let api = remote.client()?;
    let answer = match command {
        TenantCommand::Create(args) => {
            let created = api
                .call_json(
                    reqwest::Method::POST,
                    "/v1/tenants",
                    Some(create_request(&args)),
                )
                .await?;
            if !remote.json {
                println!("{}", created["token"].as_str().unwrap_or_default());
                eprintln!(
                    "created tenant `{}`; the token above is shown only now",
                    args.id
                );
                return Ok(());
            }
            created
        }
        TenantCommand::Ls => {
            let list = api
                .call_json(reqwest::Method::GET, "/v1/tenants", None)
                .await?;
            if !remote.json {
                print_tenants(&list);
                return Ok(());
            }
            list
        }
        TenantCommand::Token { id } => {
            let issued = api
                .call_json(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{id}/tokens"),
                    None,
                )
                .await?;
            if !remote.json {
                println!("{}", issued["token"].as_str().unwrap_or_default());
                return Ok(());
            }
            issued
        }
        TenantCommand::RevokeToken { id, token_id } => {
            api.call_json(
                reqwest::Method::DELETE,
                &format!("/v1/tenants/{id}/tokens/{token_id}"),
                None,
            )
            .await?;
            if !remote.json {
                println!("revoked token {token_id} of `{id}`");
                return Ok(());
            }
            json!({ "revoked": token_id, "tenant": id })
        }
        TenantCommand::Rm { id } => {
            let deleted = api
                .call_json(reqwest::Method::DELETE, &format!("/v1/tenants/{id}"), None)
                .await?;
            if !remote.json {
                let count = |k: &str| deleted[k].as_array().map_or(0, Vec::len);
                println!(
                    "deleted tenant `{id}`: {} functions, {} key-value buckets",
                    count("functions"),
                    count("kv_buckets")
                );
                return Ok(());
            }
            deleted
        }
    };
    println!("{answer}");
    Ok(())
}

/// The body of `POST /v1/tenants` for `args`: only the quotas given.
fn create_request(args: &CreateArgs) -> serde_json::Value {
    let mut quota = serde_json::Map::new();
    for (k, v) in [
        ("max_functions", args.max_functions.map(u64::from)),
        ("max_memory_mb", args.max_memory_mb),
        (
            "max_invocations_per_s",
            args.max_invocations_per_s.map(u64::from),
        ),
        ("max_kv_mb", args.max_kv_mb),
        ("max_outbox_mb", args.max_outbox_mb),
        ("max_concurrency", args.max_concurrency.map(u64::from)),
        ("max_timeout_ms", args.max_timeout_ms),
        ("max_buckets", args.max_buckets.map(u64::from)),
    ] {
        if let Some(v) = v {
            quota.insert(k.to_owned(), json!(v));
        }
    }
    json!({
        "id": args.id,
        "quota": quota,
        "grants": {
            "models": args.models,
            "uplinks": args.uplinks,
            "webhooks": args.webhooks,
            "topics": args.topics,
        },
    })
}

/// `brink tenant ls` as a table.
fn print_tenants(list: &serde_json::Value) {
    println!(
        "{:<24} {:>9} {:>10} {:>8} {:>6} {:>9}  tokens",
        "tenant", "functions", "memory_mb", "inv/s", "kv_mb", "outbox_mb"
    );
    for t in list["tenants"].as_array().into_iter().flatten() {
        let tokens: Vec<String> = t["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| {
                let id = k["id"].as_str().unwrap_or_default();
                if k["revoked"] == true {
                    format!("{id} (revoked)")
                } else {
                    id.to_owned()
                }
            })
            .collect();
        println!(
            "{:<24} {:>9} {:>10} {:>8} {:>6} {:>9}  {}",
            t["id"].as_str().unwrap_or_default(),
            t["quota"]["max_functions"],
            t["quota"]["max_memory_mb"],
            t["quota"]["max_invocations_per_s"],
            t["quota"]["max_kv_mb"],
            t["quota"]["max_outbox_mb"],
            tokens.join(", ")
        );
    }
}
