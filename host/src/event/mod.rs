//! CloudEvents at the host's edges: the JSON event format in and out, and the
//! mapping to and from the contract's `cloud-event` record.

use cloudevents::event::{AttributesReader, Data, ExtensionValue};
use cloudevents::{EventBuilder, EventBuilderV10};

use crate::bindings::CloudEvent;

pub mod http;
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
}

impl From<serde_json::Error> for EventError {
    fn from(e: serde_json::Error) -> Self {
        EventError::Json(e)
    }
}

/// Parses the CloudEvents JSON format: one event, or a batch (a JSON array).
///
/// A missing or malformed required attribute is named in the error, e.g.
/// ``invalid CloudEvent JSON: missing field `id` at line 4 column 1``.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<cloudevents::Event>, EventError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    if value.is_array() {
        let events: Vec<cloudevents::Event> = serde_json::from_value(value)?;
        if events.is_empty() {
            return Err(EventError::EmptyBatch);
        }
        Ok(events)
    } else {
        Ok(vec![serde_json::from_value(value)?])
    }
}

/// The contract's record for `event`.
pub fn to_wit(event: &cloudevents::Event) -> CloudEvent {
    let mut extensions: Vec<(String, String)> = event
        .iter_extensions()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect();
    // The SDK keeps extensions in a hash map; sorting makes what guests see deterministic.
    extensions.sort();
    let data = event.data().map(|data| match data {
        Data::Binary(bytes) => bytes.clone(),
        Data::String(s) => s.clone().into_bytes(),
        Data::Json(value) => value.to_string().into_bytes(),
    });
    CloudEvent {
        id: event.id().to_owned(),
        source: event.source().to_string(),
        type_: event.ty().to_owned(),
        specversion: event.specversion().to_string(),
        subject: event.subject().map(str::to_owned),
        time: event
            .time()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        datacontenttype: event.datacontenttype().map(str::to_owned),
        dataschema: event.dataschema().map(|u| u.to_string()),
        extensions,
        data,
    }
}

/// Attribute names an extension may not take.
const RESERVED: &[&str] = &[
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
    if RESERVED.contains(&name) {
        return Err(format!(
            "extension name {name:?} is a reserved attribute name"
        ));
    }
    Ok(())
}

fn is_json_type(ct: &str) -> bool {
    let ct = ct.split(';').next().unwrap_or_default().trim();
    ct == "application/json" || ct == "text/json" || ct.ends_with("+json")
}

/// Validates a record a guest produced and turns it into an SDK event.
///
/// JSON data (by content type, or when none is given and it parses as JSON)
/// is kept as JSON so the structured format shows it as `data`; other data is
/// text for `text/*` and otherwise binary (`data_base64`).
pub fn from_wit(event: &CloudEvent) -> Result<cloudevents::Event, EventError> {
    if event.specversion != "1.0" {
        return Err(EventError::Invalid(format!(
            "specversion {:?} is not \"1.0\"",
            event.specversion
        )));
    }
    for (field, value) in [
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.type_),
    ] {
        if value.is_empty() {
            return Err(EventError::Invalid(format!("`{field}` is empty")));
        }
    }
    let mut builder = EventBuilderV10::new()
        .id(event.id.clone())
        .source(event.source.clone())
        .ty(event.type_.clone());
    if let Some(subject) = &event.subject {
        builder = builder.subject(subject.clone());
    }
    if let Some(time) = &event.time {
        builder = builder.time(time.as_str());
    }
    for (name, value) in &event.extensions {
        check_extension_name(name).map_err(EventError::Invalid)?;
        builder = builder.extension(name, ExtensionValue::String(value.clone()));
    }
    let mut out = builder
        .build()
        .map_err(|e| EventError::Invalid(e.to_string()))?;
    if let Some(schema) = &event.dataschema {
        let url = schema
            .parse::<url::Url>()
            .map_err(|e| EventError::Invalid(format!("dataschema {schema:?}: {e}")))?;
        cloudevents::event::AttributesWriter::set_dataschema(&mut out, Some(url));
    }
    if let Some(bytes) = &event.data {
        let ct = event.datacontenttype.as_deref();
        let data = match ct {
            Some(ct) if is_json_type(ct) => {
                Data::Json(serde_json::from_slice(bytes).map_err(|e| {
                    EventError::Invalid(format!("data is declared {ct} but is not JSON: {e}"))
                })?)
            }
            None => match serde_json::from_slice(bytes) {
                Ok(value) => Data::Json(value),
                Err(_) => Data::Binary(bytes.clone()),
            },
            Some(ct) if ct.starts_with("text/") => match String::from_utf8(bytes.clone()) {
                Ok(text) => Data::String(text),
                Err(_) => Data::Binary(bytes.clone()),
            },
            Some(_) => Data::Binary(bytes.clone()),
        };
        out.set_data_unchecked(data);
    }
    if let Some(ct) = &event.datacontenttype {
        cloudevents::event::AttributesWriter::set_datacontenttype(&mut out, Some(ct.clone()));
    }
    Ok(out)
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
    pub name: fn(&str) -> String,
    pub missing_hint: &'static str,
}

/// Builds an event from binary-mode attributes (already decoded to text),
/// the binding's content type and the payload.
pub(crate) fn decode_binary(
    attrs: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
    names: &BindingNames,
) -> Result<cloudevents::Event, EventError> {
    let get = |attr: &str| {
        attrs
            .iter()
            .find(|(name, _)| name == attr)
            .map(|(_, v)| v.clone())
    };
    let required = |attr: &str| {
        get(attr).ok_or_else(|| {
            EventError::Invalid(format!(
                "missing {}{}",
                (names.name)(attr),
                names.missing_hint
            ))
        })
    };
    let specversion = required("specversion")?;
    if specversion != "1.0" {
        return Err(EventError::Invalid(format!(
            "unsupported {} {specversion:?}; this host reads \"1.0\"",
            (names.name)("specversion")
        )));
    }
    let mut builder = EventBuilderV10::new()
        .id(required("id")?)
        .source(required("source")?)
        .ty(required("type")?);
    if let Some(subject) = get("subject") {
        builder = builder.subject(subject);
    }
    if let Some(time) = get("time") {
        builder = builder.time(time);
    }
    for (attr, value) in attrs {
        if matches!(
            attr.as_str(),
            "id" | "source" | "type" | "specversion" | "subject" | "time" | "dataschema"
        ) {
            continue;
        }
        check_extension_name(attr)
            .map_err(|e| EventError::Invalid(format!("{}: {e}", (names.name)(attr))))?;
        builder = builder.extension(attr, ExtensionValue::String(value.clone()));
    }
    let mut event = builder
        .build()
        .map_err(|e| EventError::Invalid(e.to_string()))?;
    if let Some(schema) = get("dataschema") {
        let url = schema.parse::<url::Url>().map_err(|e| {
            EventError::Invalid(format!("{} {schema:?}: {e}", (names.name)("dataschema")))
        })?;
        cloudevents::event::AttributesWriter::set_dataschema(&mut event, Some(url));
    }
    if !body.is_empty() || content_type.is_some() {
        let data = match content_type {
            Some(ct) if is_json_type(ct) => {
                Data::Json(serde_json::from_slice(body).map_err(|e| {
                    EventError::Invalid(format!("data is declared {ct} but is not valid JSON: {e}"))
                })?)
            }
            Some(ct) if ct.starts_with("text/") => match std::str::from_utf8(body) {
                Ok(text) => Data::String(text.to_owned()),
                Err(_) => Data::Binary(body.to_vec()),
            },
            _ => Data::Binary(body.to_vec()),
        };
        event.set_data_unchecked(data);
        if let Some(ct) = content_type {
            cloudevents::event::AttributesWriter::set_datacontenttype(
                &mut event,
                Some(ct.to_owned()),
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(json: &str) -> Result<cloudevents::Event, EventError> {
        parse_json(json.as_bytes()).map(|mut v| v.remove(0))
    }

    #[test]
    fn a_missing_required_attribute_is_named() {
        let err = parse_one(r#"{"specversion":"1.0","source":"/s","type":"t"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("missing field `id`"), "{err}");
    }

    #[test]
    fn an_unknown_specversion_is_refused() {
        assert!(parse_one(r#"{"specversion":"9.9","id":"1","source":"/s","type":"t"}"#).is_err());
    }

    #[test]
    fn json_data_survives_the_round_trip_through_the_record() -> anyhow::Result<()> {
        let event = parse_one(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"d",
                "time":"2026-11-22T10:00:00Z","myext":"x","data":{"value":3}}"#,
        )?;
        let wit = to_wit(&event);
        assert_eq!(wit.data.as_deref(), Some(&br#"{"value":3}"#[..]));
        assert_eq!(wit.time.as_deref(), Some("2026-11-22T10:00:00Z"));
        assert_eq!(wit.extensions, vec![("myext".to_owned(), "x".to_owned())]);
        let back = from_wit(&wit)?;
        assert_eq!(back, event);
        Ok(())
    }

    #[test]
    fn binary_data_is_kept_as_bytes() -> anyhow::Result<()> {
        let mut wit = to_wit(&parse_one(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
        )?);
        wit.datacontenttype = Some("application/octet-stream".into());
        wit.data = Some(vec![0, 159, 146, 150]);
        let out = serde_json::to_value(from_wit(&wit)?)?;
        assert_eq!(out["data_base64"], "AJ+Slg==");
        Ok(())
    }

    #[test]
    fn invalid_output_attributes_are_refused() -> anyhow::Result<()> {
        let good = to_wit(&parse_one(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
        )?);
        let mut bad = good.clone();
        bad.type_.clear();
        assert!(from_wit(&bad).is_err());
        let mut bad = good.clone();
        bad.time = Some("yesterday".into());
        assert!(from_wit(&bad).is_err());
        let mut bad = good.clone();
        bad.extensions = vec![("Bad-Name".into(), "x".into())];
        assert!(from_wit(&bad).is_err());
        let mut bad = good;
        bad.datacontenttype = Some("application/json".into());
        bad.data = Some(b"not json".to_vec());
        assert!(from_wit(&bad).is_err());
        Ok(())
    }
}
