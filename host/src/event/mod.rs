//! CloudEvents at the host's edges: the JSON event format in and out, and the
//! mapping to and from the contract's `cloud-event` record.

use crate::bindings::CloudEvent;

pub mod http;
pub mod json;
pub mod mqtt;

/// Why bytes are not a usable CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    // Not `#[source]`: the message already carries it, and `{:#}` would repeat it.
    #[error("invalid CloudEvent JSON: {0}")]
    Json(serde_json::Error),
    #[error("the batch holds no events")]
    EmptyBatch,
    #[error("invalid CloudEvent: {0}")]
    Invalid(String),
    #[error(
        "events in the {0:?} format cannot be read; send application/cloudevents+json (one event), application/cloudevents-batch+json (a batch) or binary mode (ce- headers)"
    )]
    UnsupportedFormat(String),
}

impl From<serde_json::Error> for EventError {
    fn from(e: serde_json::Error) -> Self {
        EventError::Json(e)
    }
}

pub(crate) fn invalid(why: impl Into<String>) -> EventError {
    EventError::Invalid(why.into())
}

/// How a binding names an attribute in errors: ``attribute `id` ``,
/// ``header `ce-id` ``, ``user property `id` ``.
pub(crate) type Names = fn(&str) -> String;

/// The JSON type an extension arrived with, when it was not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtKind {
    Integer,
    Boolean,
}

/// The JSON types of an event's non-string extensions, by name. The
/// contract carries extension values as text; the host remembers what they
/// were, so a function that passes `"seq": 42` on publishes `42`, not `"42"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtTypes(std::collections::BTreeMap<String, ExtKind>);

impl ExtTypes {
    /// The type `name` arrived with, when it was not a string.
    pub fn kind(&self, name: &str) -> Option<ExtKind> {
        self.0.get(name).copied()
    }
}

/// The attributes CloudEvents 1.0 defines; every other member is an extension.
pub(crate) const ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "type",
    "specversion",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// The one version this host reads and writes.
pub(crate) fn check_specversion(version: &str, name: Names) -> Result<(), EventError> {
    if version == "1.0" {
        return Ok(());
    }
    Err(invalid(format!(
        "{} is {version:?}, which this host does not read; it reads CloudEvents \"1.0\" only",
        name("specversion")
    )))
}

fn check_extension_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!(
            "extension name {name:?} must be lowercase letters and digits only"
        ));
    }
    if ATTRIBUTES.contains(&name) {
        return Err(format!(
            "extension name {name:?} is a reserved attribute name"
        ));
    }
    Ok(())
}

/// Whether a content type names JSON (`application/json`, `text/json`, `*+json`).
pub fn is_json_type(ct: &str) -> bool {
    let ct = ct.split(';').next().unwrap_or_default().trim().as_bytes();
    ct.eq_ignore_ascii_case(b"application/json")
        || ct.eq_ignore_ascii_case(b"text/json")
        || ct
            .len()
            .checked_sub(5)
            .and_then(|start| ct.get(start..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(b"+json"))
}

/// The first name that appears twice: a scan for the usual handful, a set
/// for many, so 100k extensions cost 100k steps rather than 10^10.
pub(crate) fn first_duplicate<T>(items: &[T], name: impl Fn(&T) -> &str) -> Option<&str> {
    if items.len() <= 16 {
        return items
            .iter()
            .enumerate()
            .find(|(i, item)| items[..*i].iter().any(|seen| name(seen) == name(item)))
            .map(|(_, item)| name(item));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.iter().map(&name).find(|item| !seen.insert(*item))
}

/// The rules of CloudEvents 1.0 every event must meet, coming in (refused
/// as the sender's fault) or going out (a function's fault): the version,
/// non-empty `id`, `source` and `type`, optional attributes non-empty when
/// present, an RFC 3339 `time`, an absolute `dataschema` URI, extension
/// names of lowercase letters and digits, and JSON data that is JSON.
/// `name` says how the binding spells an attribute in the error.
pub fn validate(event: &CloudEvent, name: Names) -> Result<(), EventError> {
    validate_attributes(event, name)?;
    check_json_data(event)
}

/// [`validate`] but for the data: for a reader that already knows its data
/// is JSON, and a writer that checks it as it writes.
pub(crate) fn validate_attributes(event: &CloudEvent, name: Names) -> Result<(), EventError> {
    check_specversion(&event.specversion, name)?;
    for (attr, value) in [
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.type_),
    ] {
        if value.is_empty() {
            return Err(invalid(format!(
                "{} is empty; CloudEvents requires a non-empty {attr}",
                name(attr)
            )));
        }
    }
    for (attr, value) in [
        ("subject", &event.subject),
        ("time", &event.time),
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
    ] {
        if value.as_deref() == Some("") {
            return Err(invalid(format!(
                "{} is empty; leave it out instead",
                name(attr)
            )));
        }
    }
    if let Some(time) = &event.time {
        chrono::DateTime::parse_from_rfc3339(time).map_err(|e| {
            invalid(format!(
                "{} {time:?} is not an RFC 3339 timestamp such as 2026-12-02T10:00:00Z: {e}",
                name("time")
            ))
        })?;
    }
    if let Some(ct) = &event.datacontenttype {
        check_media_type(ct).map_err(|why| {
            invalid(format!(
                "{} {ct:?} is not a media type such as application/json: {why}",
                name("datacontenttype")
            ))
        })?;
    }
    if let Some(schema) = &event.dataschema {
        url::Url::parse(schema).map_err(|e| {
            invalid(format!(
                "{} {schema:?} is not an absolute URI: {e}",
                name("dataschema")
            ))
        })?;
    }
    for (ext, _) in &event.extensions {
        check_extension_name(ext).map_err(|e| invalid(format!("{}: {e}", name(ext))))?;
    }
    if let Some(twice) = first_duplicate(&event.extensions, |(n, _)| n.as_str()) {
        return Err(invalid(format!("{} appears twice", name(twice))));
    }
    Ok(())
}

/// RFC 2046 media type syntax: `type/subtype`, both tokens, then optional
/// parameters in visible ASCII. A content type outside it cannot travel as
/// an HTTP `Content-Type` (a webhook in binary mode) and names no format.
fn check_media_type(ct: &str) -> Result<(), &'static str> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let (essence, params) = ct.split_once(';').unwrap_or((ct, ""));
    let Some((kind, subtype)) = essence.trim_end().split_once('/') else {
        return Err("it has no '/' between type and subtype");
    };
    if !is_token(kind) || !is_token(subtype) {
        return Err("its type and subtype must be tokens (letters, digits, and !#$%&'*+-.^_`|~)");
    }
    if !params
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err("its parameters hold characters outside visible ASCII");
    }
    Ok(())
}

/// Why `bytes` are not one JSON text, if they are not. UTF-8 is checked
/// first: serde_json skips the bytes of strings it ignores without checking
/// them, so `{"a\x9f":1}` would pass, and then be written into the JSON
/// format as JSON that nothing can read back.
pub(crate) fn json_error(bytes: &[u8]) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(text) => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => lone_surrogate(text),
            Err(e) => Some(e.to_string()),
        },
        Err(e) => Some(format!("it is not UTF-8 ({e})")),
    }
}

/// Where a string in well-formed JSON `text` escapes half of a UTF-16
/// surrogate pair (`"\ud800"`). `IgnoredAny` does not decode escapes, so
/// it lets these through; they name no character, and serde_json itself
/// (so the CloudEvents SDK) will not read them as a value (RFC 8259 §8.2).
pub(crate) fn lone_surrogate(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let hex = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex(i + 2).unwrap_or(0);
                if (0xD800..0xDC00).contains(&unit) {
                    let low = (bytes.get(i + 6..i + 8) == Some(&b"\\u"[..]))
                        .then(|| hex(i + 8))
                        .flatten();
                    if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                        return Some(format!("a string holds a lone surrogate \\u{unit:04x}"));
                    }
                    i += 6;
                } else if (0xDC00..0xE000).contains(&unit) {
                    return Some(format!("a string holds a lone surrogate \\u{unit:04x}"));
                }
                i += 5;
            }
            (true, b'\\') => i += 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `bytes` are one JSON text (UTF-8, no lone surrogates): what the
/// JSON format may carry as `data` rather than `data_base64`.
pub fn is_json(bytes: &[u8]) -> bool {
    json_error(bytes).is_none()
}

/// Data declared JSON must be JSON.
pub(crate) fn check_json_data(event: &CloudEvent) -> Result<(), EventError> {
    if let (Some(ct), Some(bytes)) = (&event.datacontenttype, &event.data)
        && is_json_type(ct)
        && let Some(e) = json_error(bytes)
    {
        return Err(invalid(format!(
            "data is declared {ct} but is not valid JSON: {e}"
        )));
    }
    Ok(())
}

/// Attributes the binary modes carry one by one (all but `datacontenttype`,
/// which travels as the binding's content type), in a stable order.
pub(crate) fn binary_attributes(event: &CloudEvent) -> Vec<(&str, &str)> {
    let mut attrs = vec![
        ("specversion", event.specversion.as_str()),
        ("id", event.id.as_str()),
        ("source", event.source.as_str()),
        ("type", event.type_.as_str()),
    ];
    for (name, value) in [
        ("subject", &event.subject),
        ("time", &event.time),
        ("dataschema", &event.dataschema),
    ] {
        if let Some(value) = value {
            attrs.push((name, value.as_str()));
        }
    }
    attrs.extend(
        event
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    attrs
}

/// How a binding names an attribute in errors, e.g. ``header `ce-id` `` or
/// ``user property `id` ``, and what to add when a required one is missing.
pub(crate) struct BindingNames {
    pub name: Names,
    pub missing_hint: &'static str,
}

/// Builds an event from binary-mode attributes (already decoded to text),
/// the binding's content type and the payload, which becomes the data as it is.
pub(crate) fn decode_binary(
    attrs: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
    names: &BindingNames,
) -> Result<CloudEvent, EventError> {
    let get = |attr: &str| {
        attrs
            .iter()
            .find(|(name, _)| name == attr)
            .map(|(_, v)| v.clone())
    };
    let required = |attr: &str| {
        get(attr).ok_or_else(|| {
            invalid(format!(
                "missing {}{}",
                (names.name)(attr),
                names.missing_hint
            ))
        })
    };
    check_specversion(&required("specversion")?, names.name)?;
    let event = CloudEvent {
        specversion: "1.0".to_owned(),
        id: required("id")?,
        source: required("source")?,
        type_: required("type")?,
        subject: get("subject"),
        time: get("time"),
        datacontenttype: content_type.map(str::to_owned),
        dataschema: get("dataschema"),
        extensions: attrs
            .iter()
            .filter(|(attr, _)| !ATTRIBUTES.contains(&attr.as_str()))
            .cloned()
            .collect(),
        // An empty payload is no data: HTTP clients send a Content-Type
        // with an empty body, and JSON data cannot be empty.
        data: (!body.is_empty()).then(|| body.to_vec()),
    };
    validate(&event, names.name)?;
    Ok(event)
}

/// The approximate wire size of a record: its attributes plus its data.
pub fn size_of(event: &CloudEvent) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    event.id.len()
        + event.source.len()
        + event.type_.len()
        + event.specversion.len()
        + opt(&event.subject)
        + opt(&event.time)
        + opt(&event.datacontenttype)
        + opt(&event.dataschema)
        + event
            .extensions
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + event.data.as_ref().map_or(0, Vec::len)
}

/// What each event costs beyond its attributes' and data's bytes as it
/// travels in the JSON format: the names, quotes and separators of the
/// required attributes, and an id of 36 when the host must make one.
const ENVELOPE: usize = 64;

/// The bytes `event` takes as it will travel, from above: [`size_of`] plus
/// its JSON envelope, a generated id, each optional attribute's and
/// extension's name and punctuation, and base64 for binary data. Counting
/// this, not [`size_of`], keeps a flood of empty events from passing an
/// output limit that their serialised form is many times over.
pub fn wire_size(event: &CloudEvent) -> usize {
    let optional = [
        &event.subject,
        &event.time,
        &event.datacontenttype,
        &event.dataschema,
    ]
    .iter()
    .filter(|a| a.is_some())
    .count();
    let data = event
        .data
        .as_ref()
        .map_or(0, |d| d.len().div_ceil(3) * 4 - d.len());
    size_of(event)
        + ENVELOPE
        + if event.id.is_empty() { 36 } else { 0 }
        + optional * 20
        + event.extensions.len() * 6
        + data
}

/// An event with the required attributes and `extensions`, for tests.
#[cfg(test)]
pub(crate) fn test_event(extensions: Vec<(String, String)>) -> CloudEvent {
    CloudEvent {
        id: "1".into(),
        source: "/s".into(),
        type_: "t".into(),
        specversion: "1.0".into(),
        subject: None,
        time: None,
        datacontenttype: None,
        dataschema: None,
        extensions,
        data: None,
    }
}

#[cfg(test)]
mod tests;
