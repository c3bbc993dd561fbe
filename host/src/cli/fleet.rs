//! `brink deploy --fleet FILE` (or `--node URL...`): one signed version to
//! many nodes, in two
//! phases so a fleet never runs a version some of its nodes refused to
//! check. First the version is uploaded and staged (published, not
//! activated) on every node; then it is activated only where staging
//! passed. Each node's outcome is reported; the command fails when any node
//! did. `brink rollback --fleet` rolls each node back the same way.

use anyhow::Context as _;
use serde_json::{Value, json};

use super::client::Client;
use super::deploy::{DeployArgs, Prepared, send, spec_of};

/// A fleet file (`brink deploy --fleet fleet.toml`):
///
/// ```toml
/// [[node]]
/// url = "https://gw-plant3-07:7070"
/// token = "brink_…"            # default: --token
/// ```
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    node: Vec<FleetNode>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetNode {
    url: String,
    token: Option<String>,
}

/// Which nodes a fleet command acts on: `--fleet FILE`, `--node URL`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetFlags {
    /// Act on each of these nodes' admin APIs (repeatable), with the same
    /// token (`--token`).
    #[arg(long = "node", value_name = "URL")]
    pub nodes: Vec<String>,
    /// Act on the nodes a fleet file lists, each with its own token
    /// (`[[node]] url = "…"`, `token = "…"`).
    #[arg(long, value_name = "FILE")]
    pub fleet: Option<std::path::PathBuf>,
}

impl FleetFlags {
    /// Whether any node was named: a fleet command, not a single-node one.
    pub fn any(&self) -> bool {
        !self.nodes.is_empty() || self.fleet.is_some()
    }
}

/// Each node, with its token: `--fleet`'s, then `--node`'s; `token` is
/// `--token`'s, for nodes given none.
fn nodes(
    flags: &FleetFlags,
    token: Option<String>,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut nodes = Vec::new();
    if let Some(path) = &flags.fleet {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the fleet file {}", path.display()))?;
        let fleet: FleetFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map_or(1, |before| before.matches('\n').count() + 1);
            anyhow::anyhow!(
                "{}, line {line}: {}; expected [[node]] tables with url and an optional token",
                path.display(),
                e.message().trim()
            )
        })?;
        nodes.extend(
            fleet
                .node
                .into_iter()
                .map(|n| (n.url, n.token.or_else(|| token.clone()))),
        );
    }
    nodes.extend(flags.nodes.iter().map(|url| (url.clone(), token.clone())));
    anyhow::ensure!(!nodes.is_empty(), "the fleet file lists no [[node]]");
    Ok(nodes)
}

/// What happened on one node.
struct Outcome {
    node: String,
    staged: Result<(), String>,
    activated: Option<Result<String, String>>,
}

/// Sends and stages `prepared` on one node.
async fn stage(api: &Client, prepared: &Prepared, publish: &Value) -> anyhow::Result<()> {
    send(api, prepared).await?;
    api.call_json(
        reqwest::Method::POST,
        &format!("/v1/functions/{}/versions", prepared.name),
        Some(publish.clone()),
    )
    .await?;
    Ok(())
}

pub(super) async fn deploy(args: DeployArgs, prepared: Prepared) -> anyhow::Result<()> {
    let publish = json!({
        "version": prepared.version,
        "digest": prepared.digest,
        "spec": spec_of(&args)?,
        "signatures": prepared.signatures,
        "activate": false,
    });
    let nodes = nodes(&args.fleet, args.remote.node.token())?;
    let mut outcomes = Vec::new();
    for (node, token) in &nodes {
        let staged = match Client::new(node, token.clone()) {
            Ok(api) => stage(&api, &prepared, &publish).await,
            Err(e) => Err(e),
        };
        outcomes.push(Outcome {
            node: node.clone(),
            staged: staged.map_err(|e| format!("{e:#}")),
            activated: None,
        });
    }
    let (name, version) = (&prepared.name, &prepared.version);
    if !args.no_activate {
        for (outcome, (_, token)) in outcomes.iter_mut().zip(&nodes) {
            if outcome.staged.is_ok() {
                outcome.activated =
                    Some(activate(&outcome.node, token.clone(), name, version).await);
            }
        }
    }
    report(&args, name, version, &outcomes)
}

async fn activate(
    node: &str,
    token: Option<String>,
    name: &str,
    version: &str,
) -> Result<String, String> {
    let api = Client::new(node, token).map_err(|e| format!("{e:#}"))?;
    let answer = api
        .call_json(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/activate"),
            Some(json!({ "version": version })),
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(answer["active"].as_str().unwrap_or("-").to_owned())
}

/// Prints a node's line (or JSON object).
fn say(json: bool, node: &str, ok: bool, text: &str) {
    if json {
        println!("{}", json!({ "node": node, "ok": ok, "result": text }));
    } else {
        println!("{node:<32} {} {text}", if ok { "ok  " } else { "FAIL" });
    }
}

/// `brink rollback NAME --fleet …`: each node back to its previous version,
/// a line per node; fails when any node did.
pub async fn rollback(
    flags: &FleetFlags,
    remote: &super::client::Remote,
    name: &str,
) -> anyhow::Result<()> {
    let nodes = nodes(flags, remote.node.token())?;
    let mut failed = 0;
    for (node, token) in &nodes {
        let rolled = match Client::new(node, token.clone()) {
            Ok(api) => {
                api.call_json(
                    reqwest::Method::POST,
                    &format!("/v1/functions/{name}/rollback"),
                    None,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match rolled {
            Ok(answer) => say(
                remote.json,
                node,
                true,
                &format!(
                    "{name}: active {}",
                    answer["active"].as_str().unwrap_or("-")
                ),
            ),
            Err(e) => {
                failed += 1;
                say(remote.json, node, false, &format!("not rolled back: {e:#}"));
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} nodes failed to roll {name} back; the others did",
        nodes.len()
    );
    Ok(())
}

/// One line (or JSON object) per node; an error when any node failed.
fn report(
    args: &DeployArgs,
    name: &str,
    version: &str,
    outcomes: &[Outcome],
) -> anyhow::Result<()> {
    let mut failed = 0;
    for o in outcomes {
        let (ok, text) = match (&o.staged, &o.activated) {
            (Err(why), _) => (false, format!("refused, not activated: {why}")),
            (Ok(()), None) => (true, format!("staged {name}@{version}")),
            (Ok(()), Some(Ok(active))) => {
                (true, format!("deployed {name}@{version}, active {active}"))
            }
            (Ok(()), Some(Err(why))) => (false, format!("staged, but activation failed: {why}")),
        };
        failed += usize::from(!ok);
        say(args.remote.json, &o.node, ok, &text);
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} nodes failed; the others {} {name}@{version}",
        outcomes.len(),
        if args.no_activate { "staged" } else { "run" },
    );
    Ok(())
}
