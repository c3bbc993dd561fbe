//! The CloudEvents JSON format, one event or a batch. Properties:
//! - whatever parses is valid and writes back to bytes that parse to the
//!   same event (ADR 0009's byte-exactness, checked by the fuzzer);
//! - a batch writes back as a batch of the same events;
//! - differential: every single event we accept, the CloudEvents SDK
//!   (`cloudevents-sdk`, the reference we replaced) accepts too, with the
//!   same attributes, extensions and data; except a number too large for
//!   a double (`1e400`), which JSON allows and the SDK cannot hold; a
//!   JSON media type in capitals (RFC 2045: case-insensitive); a
//!   content type the SDK takes for JSON by its prefix (`text/jsonx`);
//!   and an integer extension of `-0`, which the SDK reads as a float.
#![no_main]

use brink_fuzz::{check_accepted, json_value_data};
use brink_host::bindings::CloudEvent;
use brink_host::event::json;
use cloudevents::event::{AttributesReader, Data, ExtensionValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(events) = json::parse(bytes) else {
        return;
    };
    for (event, types) in &events {
        check_accepted(event, types);
    }
    let refs: Vec<_> = events.iter().map(|(e, t)| (e, t)).collect();
    match json::write_batch(refs) {
        Ok(batch) => match json::parse(&batch) {
            Ok(again) => {
                let expected: Vec<_> = events
                    .iter()
                    .map(|(e, t)| (json_value_data(e), t.clone()))
                    .collect();
                assert_eq!(again, expected, "a batch changed in a round trip");
            }
            Err(e) => panic!("a written batch does not parse: {e}"),
        },
        Err(e) => panic!("accepted events cannot be written as a batch: {e}"),
    }
    if let [(event, _)] = events.as_slice()
        && bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    {
        same_as_reference(bytes, event);
    }
});

fn same_as_reference(bytes: &[u8], ours: &CloudEvent) {
    let reference: cloudevents::Event = match serde_json::from_slice(bytes) {
        Ok(event) => event,
        // The one divergence by design: JSON numbers pass through as sent
        // (ADR 0009), `1e400` included, which serde_json cannot hold.
        Err(e) if e.to_string().contains("number out of range") => return,
        // The SDK takes a content type for JSON by prefix (`text/jsonx`,
        // `application/json-seq`) and misses `+json` with parameters; we
        // compare the media type's essence.
        Err(_)
            if ours
                .datacontenttype
                .as_deref()
                .is_some_and(|ct| sdk_says_json(ct) != brink_host::event::is_json_type(ct)) =>
        {
            return;
        }
        // An extension of `-0` is a CloudEvents Integer (a minus sign and
        // an integer part, as the JSON format allows), kept as sent; the
        // SDK refuses it, because serde_json reads `-0` as the float -0.0
        // to keep its sign.
        Err(_) if ours.extensions.iter().any(|(_, value)| value == "-0") => return,
        // And media types compare case-insensitively (RFC 2045 §5.1), so
        // `Application/JSON` declares JSON data; the SDK compares bytes.
        Err(_)
            if ours.datacontenttype.as_deref().is_some_and(|ct| {
                brink_host::event::is_json_type(ct) && ct != ct.to_ascii_lowercase()
            }) =>
        {
            return;
        }
        Err(e) => panic!(
            "we accept an event the CloudEvents SDK refuses ({e}):\n{}",
            String::from_utf8_lossy(bytes)
        ),
    };
    assert_eq!(reference.id(), ours.id);
    assert_eq!(reference.source().as_str(), ours.source);
    assert_eq!(reference.ty(), ours.type_);
    assert_eq!(reference.subject(), ours.subject.as_deref());
    assert_eq!(reference.datacontenttype(), ours.datacontenttype.as_deref());
    let mut theirs: Vec<(String, String)> = reference
        .iter_extensions()
        .map(|(name, value)| {
            let value = match value {
                ExtensionValue::String(s) => s.clone(),
                ExtensionValue::Boolean(b) => b.to_string(),
                ExtensionValue::Integer(i) => i.to_string(),
            };
            (name.to_owned(), value)
        })
        .collect();
    let mut mine = ours.extensions.clone();
    theirs.sort();
    mine.sort();
    assert_eq!(mine, theirs, "extensions differ from the SDK's");
    if ours
        .datacontenttype
        .as_deref()
        .is_some_and(|ct| sdk_says_json(ct) != brink_host::event::is_json_type(ct))
    {
        // Data the SDK reads as JSON and we as text, or the other way round.
        return;
    }
    match (reference.data(), &ours.data) {
        (None, None) => {}
        (Some(Data::Binary(b)), Some(d)) => assert_eq!(b, d, "base64 data differs"),
        (Some(Data::Json(v)), Some(d)) => {
            let mine: serde_json::Value = match serde_json::from_slice(d) {
                Ok(v) => v,
                Err(e) => panic!("our JSON data does not parse: {e}"),
            };
            assert_eq!(&mine, v, "JSON data differs from the SDK's");
        }
        (Some(Data::String(s)), Some(d)) => {
            let as_json = serde_json::to_vec(s).unwrap_or_default();
            assert!(
                d == s.as_bytes() || *d == as_json,
                "string data differs from the SDK's"
            );
        }
        (theirs, mine) => panic!("data differs: the SDK has {theirs:?}, we have {mine:?}"),
    }
}

/// `cloudevents-sdk`'s own test (`event/data.rs`).
fn sdk_says_json(ct: &str) -> bool {
    ct.starts_with("application/json") || ct.starts_with("text/json") || ct.ends_with("+json")
}
