//! CloudEvents at the host's edges: the JSON event format in and out, and the
//! mapping to and from the contract's `cloud-event` record.

use cloudevents::event::{AttributesReader, Data, ExtensionValue};
use cloudevents::{EventBuilder, EventBuilderV10};

use crate::bindings::CloudEvent;

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

/// The CloudEvents HTTP binding: structured, batched and binary modes.
pub mod http {
    use cloudevents::event::{Data, ExtensionValue};
    use cloudevents::{EventBuilder, EventBuilderV10};
    use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

    use super::{EventError, check_extension_name, is_json_type};

    /// Media type of the structured mode.
    pub const STRUCTURED: &str = "application/cloudevents+json";
    /// Media type of the batched mode.
    pub const BATCH: &str = "application/cloudevents-batch+json";

    /// How a request carried its events.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mode {
        Binary,
        Structured,
        Batched,
    }

    /// Tells the modes apart by `Content-Type`, as the binding says.
    pub fn mode(headers: &HeaderMap) -> Mode {
        let ct = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if ct.starts_with("application/cloudevents-batch") {
            Mode::Batched
        } else if ct.starts_with("application/cloudevents") {
            Mode::Structured
        } else {
            Mode::Binary
        }
    }

    /// Decodes a request's events (one, or several in batched mode).
    pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<cloudevents::Event>, EventError> {
        match mode(headers) {
            Mode::Batched => {
                let value: serde_json::Value = serde_json::from_slice(body)?;
                if !value.is_array() {
                    return Err(EventError::Invalid(
                        "a batched request's body must be a JSON array of events".into(),
                    ));
                }
                super::parse_json(body)
            }
            Mode::Structured => {
                let value: serde_json::Value = serde_json::from_slice(body)?;
                if !value.is_object() {
                    return Err(EventError::Invalid(
                        "a structured request's body must be one JSON event object".into(),
                    ));
                }
                Ok(vec![serde_json::from_value(value)?])
            }
            Mode::Binary => Ok(vec![decode_binary(headers, body)?]),
        }
    }

    /// A `ce-` header value: percent-decoded (UTF-8), legacy quotes removed.
    fn header_value(name: &str, value: &HeaderValue) -> Result<String, EventError> {
        let raw = value.as_bytes();
        let raw = match raw {
            [b'"', inner @ .., b'"'] => inner,
            other => other,
        };
        percent_encoding::percent_decode(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                EventError::Invalid(format!(
                    "header `{name}` is not valid percent-encoded UTF-8"
                ))
            })
    }

    fn decode_binary(headers: &HeaderMap, body: &[u8]) -> Result<cloudevents::Event, EventError> {
        let get = |attr: &'static str| -> Result<Option<String>, EventError> {
            let name = format!("ce-{attr}");
            headers
                .get(&name)
                .map(|v| header_value(&name, v))
                .transpose()
        };
        let required = |attr: &'static str| -> Result<String, EventError> {
            get(attr)?.ok_or_else(|| {
                EventError::Invalid(format!(
                    "missing header `ce-{attr}` (binary mode; for structured mode send Content-Type: {STRUCTURED})"
                ))
            })
        };
        let specversion = required("specversion")?;
        if specversion != "1.0" {
            return Err(EventError::Invalid(format!(
                "unsupported `ce-specversion` {specversion:?}; this host reads \"1.0\""
            )));
        }
        let mut builder = EventBuilderV10::new()
            .id(required("id")?)
            .source(required("source")?)
            .ty(required("type")?);
        if let Some(subject) = get("subject")? {
            builder = builder.subject(subject);
        }
        if let Some(time) = get("time")? {
            builder = builder.time(time);
        }
        if headers.contains_key("ce-datacontenttype") {
            return Err(EventError::Invalid(
                "binary mode carries the data's type in Content-Type; `ce-datacontenttype` must not be sent".into(),
            ));
        }
        for (name, value) in headers {
            let Some(attr) = name.as_str().strip_prefix("ce-") else {
                continue;
            };
            if matches!(
                attr,
                "id" | "source" | "type" | "specversion" | "subject" | "time" | "dataschema"
            ) {
                continue;
            }
            check_extension_name(attr).map_err(EventError::Invalid)?;
            let value = header_value(name.as_str(), value)?;
            builder = builder.extension(attr, ExtensionValue::String(value));
        }
        let mut event = builder
            .build()
            .map_err(|e| EventError::Invalid(e.to_string()))?;
        if let Some(schema) = get("dataschema")? {
            let url = schema
                .parse::<url::Url>()
                .map_err(|e| EventError::Invalid(format!("`ce-dataschema` {schema:?}: {e}")))?;
            cloudevents::event::AttributesWriter::set_dataschema(&mut event, Some(url));
        }
        let ct = headers
            .get(CONTENT_TYPE)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| EventError::Invalid("Content-Type is not ASCII".into()))
            })
            .transpose()?;
        if !body.is_empty() || ct.is_some() {
            let data = match ct.as_deref() {
                Some(ct) if is_json_type(ct) => {
                    Data::Json(serde_json::from_slice(body).map_err(|e| {
                        EventError::Invalid(format!(
                            "body is declared {ct} but is not valid JSON: {e}"
                        ))
                    })?)
                }
                Some(ct) if ct.starts_with("text/") => match std::str::from_utf8(body) {
                    Ok(text) => Data::String(text.to_owned()),
                    Err(_) => Data::Binary(body.to_vec()),
                },
                _ => Data::Binary(body.to_vec()),
            };
            event.set_data_unchecked(data);
            if let Some(ct) = ct {
                cloudevents::event::AttributesWriter::set_datacontenttype(&mut event, Some(ct));
            }
        }
        Ok(event)
    }

    /// Characters a `ce-` header value must percent-encode: space, `"`, `%`
    /// and everything outside printable ASCII.
    const HEADER_ESCAPES: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');

    /// One event in binary mode: `ce-` headers, `Content-Type` and the data as body.
    pub fn encode_binary(
        event: &crate::bindings::CloudEvent,
    ) -> Result<(HeaderMap, Vec<u8>), EventError> {
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| -> Result<(), EventError> {
            let encoded = percent_encoding::utf8_percent_encode(value, HEADER_ESCAPES).to_string();
            let name = HeaderName::from_bytes(format!("ce-{name}").as_bytes())
                .map_err(|e| EventError::Invalid(format!("attribute name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(&encoded)
                .map_err(|e| EventError::Invalid(format!("attribute value {value:?}: {e}")))?;
            headers.insert(name, value);
            Ok(())
        };
        put("specversion", &event.specversion)?;
        put("id", &event.id)?;
        put("source", &event.source)?;
        put("type", &event.type_)?;
        for (name, value) in [
            ("subject", &event.subject),
            ("time", &event.time),
            ("dataschema", &event.dataschema),
        ] {
            if let Some(value) = value {
                put(name, value)?;
            }
        }
        for (name, value) in &event.extensions {
            put(name, value)?;
        }
        if let Some(ct) = &event.datacontenttype {
            let value = HeaderValue::from_str(ct)
                .map_err(|e| EventError::Invalid(format!("datacontenttype {ct:?}: {e}")))?;
            headers.insert(CONTENT_TYPE, value);
        }
        Ok((headers, event.data.clone().unwrap_or_default()))
    }

    /// Several events in the batched format.
    pub fn encode_batch(events: &[crate::bindings::CloudEvent]) -> Result<Vec<u8>, EventError> {
        let events = events
            .iter()
            .map(super::from_wit)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(serde_json::to_vec(&events)?)
    }
}
