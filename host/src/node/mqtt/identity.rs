//! Who the node is on MQTT and what it says when a message cannot be
//! published whole: its stable client id, and the cut-down dead letter.

use anyhow::Context as _;

use crate::bindings::CloudEvent;

/// The node's own MQTT client id, `brink-<node id>`: the node id is made
/// once and kept in `data_dir/node-id`, so the id (and with it the broker's
/// session for the node) survives restarts, and two nodes with their own
/// data directories never take over each other's session.
pub fn node_client_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    let read = || -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(Some(id.trim().to_owned())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    if let Some(id) = read()? {
        return Ok(format!("brink-{id}"));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    // Written whole under another name, then linked into place: a node
    // starting beside it reads a complete id or none, never half of one.
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let staged = data_dir.join(format!("node-id.{id}"));
    std::fs::write(&staged, &id).with_context(|| format!("writing {}", staged.display()))?;
    let linked = std::fs::hard_link(&staged, &path);
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => Ok(format!("brink-{id}")),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read()?
            .map(|id| format!("brink-{id}"))
            .with_context(|| format!("{} is empty", path.display())),
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// The longest attribute a dead-letter stub keeps.
const STUB_ATTRIBUTE: usize = 1024;

/// `event` cut down to what any broker takes: no data, every attribute at
/// most [`STUB_ATTRIBUTE`] bytes, and `brinkdeadletter = "truncated"` with
/// the reason the whole event could not be published.
pub(super) fn dead_letter_stub(event: &CloudEvent, why: &str) -> CloudEvent {
    let cut = |s: &str| {
        let mut end = s.len().min(STUB_ATTRIBUTE);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    let mut extensions: Vec<(String, String)> = event
        .extensions
        .iter()
        .filter(|(name, _)| name.starts_with("brinkerror") && name.len() <= 64)
        .map(|(name, value)| (name.clone(), cut(value)))
        .collect();
    extensions.push(("brinkdeadletter".into(), "truncated".into()));
    extensions.push(("brinkdeadletterreason".into(), cut(why)));
    CloudEvent {
        id: cut(&event.id),
        source: cut(&event.source),
        type_: cut(&event.type_),
        specversion: event.specversion.clone(),
        subject: event.subject.as_deref().map(cut),
        time: event.time.clone(),
        datacontenttype: None,
        dataschema: None,
        extensions,
        data: None,
    }
}
