//! The CloudEvents HTTP binding: binary, structured and batched modes.

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{BindingNames, EventError, ExtTypes, invalid};
use crate::bindings::CloudEvent;

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

/// Decodes a request's events (one, or several in batched mode), each with
/// the JSON types of its extensions.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(CloudEvent, ExtTypes)>, EventError> {
    let mode = mode(headers);
    if mode != Mode::Binary {
        let ct = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let format = ct.split(';').next().unwrap_or_default().trim();
        if !format.eq_ignore_ascii_case(STRUCTURED) && !format.eq_ignore_ascii_case(BATCH) {
            return Err(EventError::UnsupportedFormat(format.to_owned()));
        }
    }
    match mode {
        Mode::Batched => {
            if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
                return Err(invalid(
                    "a batched request's body must be a JSON array of events",
                ));
            }
            super::json::parse(body)
        }
        Mode::Structured => {
            if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(invalid(
                    "a structured request's body must be one JSON event object",
                ));
            }
            Ok(vec![super::json::parse_one(body)?])
        }
        Mode::Binary => Ok(vec![(decode_binary(headers, body)?, ExtTypes::default())]),
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

fn decode_binary(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, EventError> {
    if headers.contains_key("ce-datacontenttype") {
        return Err(EventError::Invalid(
            "binary mode carries the data's type in Content-Type; `ce-datacontenttype` must not be sent".into(),
        ));
    }
    let mut attrs = Vec::new();
    for (name, value) in headers {
        if let Some(attr) = name.as_str().strip_prefix("ce-") {
            attrs.push((attr.to_owned(), header_value(name.as_str(), value)?));
        }
    }
    let ct = headers
        .get(CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| EventError::Invalid("Content-Type is not ASCII".into()))
        })
        .transpose()?;
    super::decode_binary(&attrs, ct, body, &HEADER_NAMES)
}

const HEADER_NAMES: BindingNames = BindingNames {
    name: |attr| format!("header `ce-{attr}`"),
    missing_hint: " (binary mode; for structured mode send Content-Type: application/cloudevents+json)",
};

/// Characters a `ce-` header value must percent-encode: space, `"`, `%`
/// and everything outside printable ASCII.
const HEADER_ESCAPES: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');

/// One event in binary mode: `ce-` headers, `Content-Type` and the data as
/// body. Data without a `datacontenttype` is `application/json` when it is
/// JSON (what the JSON format implies), else `application/octet-stream`;
/// an event without data has no body and no `Content-Type`.
pub fn encode_binary(event: &CloudEvent) -> Result<(HeaderMap, Vec<u8>), EventError> {
    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: &str| -> Result<(), EventError> {
        let encoded = percent_encoding::utf8_percent_encode(value, HEADER_ESCAPES).to_string();
        let name = HeaderName::from_bytes(format!("ce-{name}").as_bytes())
            .map_err(|e| EventError::Invalid(format!("attribute name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(&encoded)
            .map_err(|e| EventError::Invalid(format!("attribute value {value:?}: {e}")))?;
        // `insert` panics past the map's 32768 entries; an event may carry more.
        headers.try_insert(name, value).map_err(|_| {
            EventError::Invalid(
                "the event has more attributes than HTTP headers can carry in binary mode".into(),
            )
        })?;
        Ok(())
    };
    for (name, value) in super::binary_attributes(event) {
        put(name, value)?;
    }
    let Some(data) = &event.data else {
        return Ok((headers, Vec::new()));
    };
    let ct = match &event.datacontenttype {
        Some(ct) => ct.as_str(),
        None if super::is_json(data) => "application/json",
        None => "application/octet-stream",
    };
    let value = HeaderValue::from_str(ct)
        .map_err(|e| EventError::Invalid(format!("datacontenttype {ct:?}: {e}")))?;
    headers.insert(CONTENT_TYPE, value);
    Ok((headers, data.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_with_more_extensions_than_a_header_map_holds_is_refused_not_a_panic() {
        let event =
            crate::event::test_event((0..40_000).map(|i| (format!("x{i}"), "v".into())).collect());
        let err = encode_binary(&event).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("more attributes than HTTP headers can carry")),
            "{err:?}"
        );
    }
}
