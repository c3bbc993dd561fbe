//! The CloudEvents JSON event format, read into and written from the
//! contract's record directly. `data` passes through as the bytes that came
//! in: a JSON value is never parsed into numbers and maps and printed again,
//! so big numbers, key order and spacing stay as the sender wrote them.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{EventError, ExtKind, ExtTypes, Names, invalid, is_json_type};
use crate::bindings::CloudEvent;

/// How the JSON format names an attribute in errors.
pub(crate) const ATTRIBUTE: Names = |attr| format!("attribute `{attr}`");

/// An event object's members in the order sent; the values are still JSON
/// text, and names are borrowed from the input unless they hold escapes.
struct Members<'a>(Vec<(Name<'a>, &'a RawValue)>);

/// A member's name, without an allocation in the usual case (borrowed
/// from the input unless it holds escapes).
#[derive(Deserialize)]
struct Name<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

impl std::ops::Deref for Name<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CloudEvent: a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(Name<'de>, &'de RawValue)> = Vec::new();
                while let Some(member) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    members.push(member);
                }
                if let Some(twice) = super::first_duplicate(&members, |(n, _)| n) {
                    return Err(serde::de::Error::custom(format!(
                        "attribute `{twice}` appears twice"
                    )));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// One event, or a batch (a JSON array), in the JSON format.
pub fn parse(bytes: &[u8]) -> Result<Vec<(CloudEvent, ExtTypes)>, EventError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(bytes)?;
        if items.is_empty() {
            return Err(EventError::EmptyBatch);
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                parse_one(raw.get().as_bytes()).map_err(|e| match e {
                    EventError::Invalid(why) => EventError::Invalid(format!("event {i}: {why}")),
                    other => other,
                })
            })
            .collect()
    } else {
        Ok(vec![parse_one(bytes)?])
    }
}

/// One event object in the JSON format, checked as [`super::validate`] says.
pub fn parse_one(bytes: &[u8]) -> Result<(CloudEvent, ExtTypes), EventError> {
    let Members(members) = serde_json::from_slice(bytes)?;
    let get = |attr: &str| {
        members
            .iter()
            .find(|(name, raw)| **name == *attr && raw.get() != "null")
            .map(|(_, raw)| *raw)
    };
    // First, so an event of another version is named as such rather than
    // refused for an attribute that version spells differently.
    let specversion = match get("specversion") {
        Some(raw) => string("specversion", raw)?,
        None => return Err(invalid("missing attribute `specversion`")),
    };
    super::check_specversion(&specversion, ATTRIBUTE)?;
    let required = |attr: &str| match get(attr) {
        Some(raw) => string(attr, raw),
        None => Err(invalid(format!("missing attribute `{attr}`"))),
    };
    let optional = |attr: &str| get(attr).map(|raw| string(attr, raw)).transpose();
    let mut event = CloudEvent {
        specversion,
        id: required("id")?,
        source: required("source")?,
        type_: required("type")?,
        subject: optional("subject")?,
        time: optional("time")?,
        datacontenttype: optional("datacontenttype")?,
        dataschema: optional("dataschema")?,
        extensions: Vec::new(),
        data: None,
    };
    let mut types = ExtTypes::default();
    for (name, raw) in &members {
        if super::ATTRIBUTES.contains(&&**name) || raw.get() == "null" {
            continue;
        }
        let (value, kind) = extension(name, raw)?;
        if let Some(kind) = kind {
            types.0.insert(name.to_string(), kind);
        }
        event.extensions.push((name.to_string(), value));
    }
    let (bytes, known_json) = data(get("data"), get("data_base64"), &event)?;
    event.data = bytes;
    super::validate_attributes(&event, ATTRIBUTE)?;
    if !known_json {
        super::check_json_data(&event)?;
    }
    Ok((event, types))
}

fn string(attr: &str, raw: &RawValue) -> Result<String, EventError> {
    serde_json::from_str(raw.get())
        .map_err(|_| invalid(format!("attribute `{attr}` must be a JSON string")))
}

/// An extension's value as the record carries it (text), and its JSON type
/// when that is not a string. CloudEvents extensions are strings, integers
/// (32-bit) or booleans in JSON; URIs, timestamps and binary travel as strings.
fn extension(name: &str, raw: &RawValue) -> Result<(String, Option<ExtKind>), EventError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => Ok((string(name, raw)?, None)),
        Some(b't' | b'f') => Ok((text.to_owned(), Some(ExtKind::Boolean))),
        Some(b'-' | b'0'..=b'9') => match text.parse::<i32>() {
            Ok(_) => Ok((text.to_owned(), Some(ExtKind::Integer))),
            Err(_) => Err(invalid(format!(
                "extension `{name}` is {text}, which is not a CloudEvents Integer (a whole number that fits in 32 bits); send it as a string"
            ))),
        },
        _ => Err(invalid(format!(
            "extension `{name}` must be a string, an integer or a boolean, not {}",
            if text.starts_with('{') {
                "an object"
            } else {
                "an array"
            }
        ))),
    }
}

/// The data's bytes: `data` as sent (the string's contents when the content
/// type is not JSON, where it must be a string), or `data_base64` decoded;
/// and whether they are known to be JSON already (a JSON value sent as one).
fn data(
    json: Option<&RawValue>,
    base64: Option<&RawValue>,
    event: &CloudEvent,
) -> Result<(Option<Vec<u8>>, bool), EventError> {
    match (json, base64) {
        (Some(_), Some(_)) => Err(invalid(
            "an event carries `data` or `data_base64`, not both",
        )),
        (None, Some(raw)) => {
            let text = string("data_base64", raw)?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(|bytes| (Some(bytes), false))
                .map_err(|e| invalid(format!("attribute `data_base64` is not base64: {e}")))
        }
        (Some(raw), None) => {
            match event.datacontenttype.as_deref() {
                Some(ct) if !is_json_type(ct) => {
                    // As the JSON format writes it (and the CloudEvents SDK
                    // reads it): data of a type that is not JSON is a string.
                    if !raw.get().starts_with('"') {
                        return Err(invalid(format!(
                            "`data` must be a JSON string when datacontenttype {ct:?} is not JSON; send the bytes as `data_base64`, or declare a JSON type"
                        )));
                    }
                    Ok((Some(string("data", raw)?.into_bytes()), false))
                }
                _ => match super::lone_surrogate(raw.get()) {
                    Some(e) => Err(invalid(format!("`data` is not valid JSON: {e}"))),
                    None => Ok((Some(raw.get().as_bytes().to_vec()), true)),
                },
            }
        }
        (None, None) => Ok((None, true)),
    }
}

/// `event` in the JSON format, after [`super::validate`]. JSON data is
/// written as the bytes the function gave; extensions `types` names are
/// written as the JSON type they arrived with.
pub fn write(event: &CloudEvent, types: &ExtTypes) -> Result<Vec<u8>, EventError> {
    // The data is checked as it is written (`write_data`), not twice.
    super::validate_attributes(event, ATTRIBUTE)?;
    let mut out = Vec::with_capacity(super::wire_size(event));
    out.push(b'{');
    str_member(&mut out, "specversion", &event.specversion)?;
    str_member(&mut out, "id", &event.id)?;
    str_member(&mut out, "source", &event.source)?;
    str_member(&mut out, "type", &event.type_)?;
    for (name, value) in [
        ("subject", &event.subject),
        ("time", &event.time),
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
    ] {
        if let Some(value) = value {
            str_member(&mut out, name, value)?;
        }
    }
    for (name, value) in &event.extensions {
        match types.kind(name) {
            // Only the canonical text: `+5` and `007` parse as i32 but are
            // not JSON. `-0` is JSON, and an Integer as sent (the fuzzer
            // found it written back as the string "-0").
            Some(ExtKind::Integer)
                if value == "-0" || value.parse::<i32>().is_ok_and(|n| n.to_string() == *value) =>
            {
                raw_member(&mut out, name, value.as_bytes())?
            }
            Some(ExtKind::Boolean) if value == "true" || value == "false" => {
                raw_member(&mut out, name, value.as_bytes())?
            }
            _ => str_member(&mut out, name, value)?,
        }
    }
    if let Some(bytes) = &event.data {
        write_data(&mut out, event.datacontenttype.as_deref(), bytes)?;
    }
    out.push(b'}');
    Ok(out)
}

fn str_member(out: &mut Vec<u8>, name: &str, value: &str) -> Result<(), EventError> {
    member_name(out, name)?;
    serde_json::to_writer(&mut *out, value)?;
    Ok(())
}

fn raw_member(out: &mut Vec<u8>, name: &str, json: &[u8]) -> Result<(), EventError> {
    member_name(out, name)?;
    out.extend_from_slice(json);
    Ok(())
}

fn member_name(out: &mut Vec<u8>, name: &str) -> Result<(), EventError> {
    if out.len() > 1 {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, name)?;
    out.push(b':');
    Ok(())
}

/// JSON data (by content type, or when none is given and it parses as
/// JSON) as it is; text for `text/*`; otherwise `data_base64`.
fn write_data(out: &mut Vec<u8>, ct: Option<&str>, bytes: &[u8]) -> Result<(), EventError> {
    match ct {
        Some(ct) if is_json_type(ct) => {
            if let Some(e) = super::json_error(bytes) {
                return Err(invalid(format!(
                    "data is declared {ct} but is not valid JSON: {e}"
                )));
            }
            raw_member(out, "data", bytes.trim_ascii())
        }
        None if super::is_json(bytes) => raw_member(out, "data", bytes.trim_ascii()),
        Some(ct) if ct.starts_with("text/") => match std::str::from_utf8(bytes) {
            Ok(text) => str_member(out, "data", text),
            Err(_) => base64_member(out, bytes),
        },
        _ => base64_member(out, bytes),
    }
}

fn base64_member(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EventError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    str_member(out, "data_base64", &encoded)
}

/// Several events in the batched format.
pub fn write_batch<'a>(
    events: impl IntoIterator<Item = (&'a CloudEvent, &'a ExtTypes)>,
) -> Result<Vec<u8>, EventError> {
    let mut out = vec![b'['];
    for (i, (event, types)) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(write(event, types)?);
    }
    out.push(b']');
    Ok(out)
}
