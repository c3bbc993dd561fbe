//! The one topic grammar: MQTT topic filters (triggers) and topic
//! templates (outputs, uplinks), checked here when a manifest or a deploy
//! is read and rendered here when an event is published.

use crate::bindings::CloudEvent;

/// Placeholders an MQTT output template may use.
const TEMPLATE_FIELDS: &[&str] = &["subject", "type", "source", "id"];

/// MQTT 3.1.1 §4.7 topic filter rules.
pub(crate) fn check_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("is empty");
    }
    if filter.contains('\0') {
        return Err("contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err("may use '#' only as the whole last level");
        }
        if level.contains('+') && *level != "+" {
            return Err("may use '+' only as a whole level");
        }
    }
    Ok(())
}

/// One piece of a topic template.
enum Part<'a> {
    Text(&'a str),
    Field(&'a str),
}

/// The pieces of `template`, in order; an unclosed `{` or an unknown
/// placeholder ends it with an error.
fn parts(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        parts.push(Part::Text(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has an unclosed '{'".to_owned())?;
        let field = &after[..close];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "uses unknown placeholder {{{field}}}; known: {}",
                TEMPLATE_FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        parts.push(Part::Field(field));
        rest = &after[close + 1..];
    }
    parts.push(Part::Text(rest));
    Ok(parts)
}

/// An MQTT output topic: no wildcards, and only known `{placeholders}`.
pub(crate) fn check_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("is empty".to_owned());
    }
    if template.contains(['+', '#']) {
        return Err("must not contain MQTT wildcards".to_owned());
    }
    if template.contains('\0') {
        return Err("contains a NUL character, which MQTT topics may not".to_owned());
    }
    parts(template).map(|_| ())
}

/// Fills a topic template's `{subject}`, `{type}`, `{source}` and `{id}`
/// from `event`.
pub fn render(template: &str, event: &CloudEvent) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let parts = parts(template).map_err(|e| anyhow::anyhow!("topic template {template:?} {e}"))?;
    for part in parts {
        let (field, value) = match part {
            Part::Text(text) => {
                out.push_str(text);
                continue;
            }
            Part::Field(field @ "subject") => (field, event.subject.as_deref()),
            Part::Field(field @ "type") => (field, Some(event.type_.as_str())),
            Part::Field(field @ "source") => (field, Some(event.source.as_str())),
            // `parts` let through only the four known fields.
            Part::Field(field) => (field, Some(event.id.as_str())),
        };
        let value = value.filter(|v| !v.is_empty()).ok_or_else(|| {
            anyhow::anyhow!("topic template {template:?} needs the event's {field}, which is empty")
        })?;
        if value.contains(['+', '#', '\0']) {
            anyhow::bail!(
                "the event's {field} {value:?} cannot be part of a topic (it holds '+', '#' or NUL)"
            );
        }
        out.push_str(value);
    }
    Ok(out)
}
