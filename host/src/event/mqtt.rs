//! The CloudEvents MQTT binding: MQTT 5 binary and structured modes, MQTT
//! 3.1.1 structured mode, and plain device payloads wrapped into events.

use super::http::{BATCH, STRUCTURED};
use super::{BindingNames, EventError, ExtTypes};
use crate::bindings::CloudEvent;

/// A message as the broker delivered it, whatever the protocol version.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// MQTT 5 `Content Type`; always `None` on MQTT 3.1.1.
    pub content_type: Option<&'a str>,
    /// MQTT 5 User Properties; always empty on MQTT 3.1.1.
    pub user_properties: &'a [(String, String)],
}

/// How an incoming message carried its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    Binary,
    Structured,
    /// Not a CloudEvent: the host wrapped the payload into one.
    Plain,
}

/// What a plain payload becomes: the `type` given to it.
#[derive(Debug, Clone)]
pub struct PlainPolicy {
    pub event_type: String,
}

const USER_PROPERTY_NAMES: BindingNames = BindingNames {
    name: |attr| format!("user property `{attr}`"),
    missing_hint: " (MQTT 5 binary mode)",
};

/// Whether a payload sent without a content type (MQTT 3.1.1 cannot send
/// one) is a structured event rather than a plain JSON reading: a JSON
/// object with a `specversion` member.
fn looks_structured(payload: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        specversion: Option<&'a serde_json::value::RawValue>,
    }
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    first == Some(&b'{')
        && serde_json::from_slice::<Probe<'_>>(payload).is_ok_and(|p| p.specversion.is_some())
}

/// An event as it came in, with the JSON types of its extensions.
pub type Decoded = (CloudEvent, ExtTypes, Carried);

/// Decodes an incoming message as the binding says; a payload that is not
/// a CloudEvent at all is wrapped (generated id, the topic as subject).
pub fn decode(message: Message<'_>, plain: &PlainPolicy) -> Result<Decoded, EventError> {
    let ct = message.content_type.map(str::to_ascii_lowercase);
    if let Some(ct) = &ct {
        if ct.starts_with(BATCH) {
            return Err(EventError::Invalid(
                "the MQTT binding has no batched mode; publish one event per message".into(),
            ));
        }
        if ct.starts_with("application/cloudevents") {
            if !ct.starts_with(STRUCTURED) {
                return Err(EventError::UnsupportedFormat(ct.clone()));
            }
            let (event, types) = super::json::parse_one(message.payload)?;
            return Ok((event, types, Carried::Structured));
        }
    }
    if message
        .user_properties
        .iter()
        .any(|(name, _)| name == "specversion")
    {
        let event = super::decode_binary(
            message.user_properties,
            message.content_type,
            message.payload,
            &USER_PROPERTY_NAMES,
        )?;
        return Ok((event, ExtTypes::default(), Carried::Binary));
    }
    if message.content_type.is_none() && looks_structured(message.payload) {
        let (event, types) = super::json::parse_one(message.payload)?;
        return Ok((event, types, Carried::Structured));
    }
    let event = wrap_plain(message, plain);
    super::validate(&event, USER_PROPERTY_NAMES.name)?;
    Ok((event, ExtTypes::default(), Carried::Plain))
}

/// Wraps a device payload, which becomes the data as it is: JSON is
/// `application/json`, UTF-8 text `text/plain`, anything else
/// `application/octet-stream`, unless the message named its content type.
fn wrap_plain(message: Message<'_>, plain: &PlainPolicy) -> CloudEvent {
    let payload = message.payload;
    let ct = match message.content_type {
        Some(ct) => ct,
        None if super::is_json(payload) => "application/json",
        None if std::str::from_utf8(payload).is_ok() => "text/plain",
        None => "application/octet-stream",
    };
    let has_data = !payload.is_empty();
    CloudEvent {
        id: uuid::Uuid::new_v4().to_string(),
        source: "/brink/mqtt".to_owned(),
        type_: plain.event_type.clone(),
        specversion: "1.0".to_owned(),
        subject: Some(message.topic.to_owned()),
        time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        datacontenttype: has_data.then(|| ct.to_owned()),
        dataschema: None,
        // A device's W3C trace context, as MQTT 5 user properties (the
        // Trace Context for MQTT convention): its trace continues here.
        extensions: message
            .user_properties
            .iter()
            .filter(|(name, _)| name == "traceparent" || name == "tracestate")
            .cloned()
            .collect(),
        data: has_data.then(|| payload.to_vec()),
    }
}

/// How outgoing events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// MQTT 5 only: the data as payload, attributes as User Properties.
    Binary,
    /// The JSON event format as payload.
    Structured,
}

/// An event ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
    pub user_properties: Vec<(String, String)>,
}

/// Encodes `event` in `mode`; `v5` says whether properties can be sent.
/// The structured mode writes the extensions `types` names as those JSON types.
pub fn encode(
    event: &CloudEvent,
    types: &ExtTypes,
    mode: OutputMode,
    v5: bool,
) -> Result<Outgoing, EventError> {
    match mode {
        OutputMode::Binary if v5 => Ok(Outgoing {
            payload: event.data.clone().unwrap_or_default(),
            content_type: event.datacontenttype.clone(),
            user_properties: super::binary_attributes(event)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }),
        OutputMode::Binary => Err(EventError::Invalid(
            "MQTT 3.1.1 carries CloudEvents in structured mode only".into(),
        )),
        OutputMode::Structured => Ok(Outgoing {
            payload: super::json::write(event, types)?,
            content_type: v5.then(|| STRUCTURED.to_owned()),
            user_properties: Vec::new(),
        }),
    }
}

/// The longest string MQTT can carry (a topic, a content type, a user
/// property's name or value): its length is a 16-bit number.
pub const MAX_STRING: usize = 65_535;

/// Bytes a variable byte integer of `n` takes (MQTT's remaining length and
/// property length).
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Checks a QoS 1 PUBLISH of `message` on `topic` against the protocol's
/// limits and the peer's `max_packet` size, before anything is written: an
/// encoder that wrote a longer string would corrupt the packet, and the
/// broker would drop the connection with every other message on it. `Err`
/// names the limit; the message can never be sent as it is.
pub fn check_limits(
    topic: &str,
    message: &Outgoing,
    v5: bool,
    max_packet: usize,
) -> Result<(), String> {
    if topic.is_empty() {
        return Err("the topic is empty".into());
    }
    if topic.len() > MAX_STRING {
        return Err(format!(
            "the topic is {} bytes, over MQTT's limit of {MAX_STRING}",
            topic.len()
        ));
    }
    let mut properties = 0;
    if v5 {
        if let Some(ct) = &message.content_type {
            if ct.len() > MAX_STRING {
                return Err(format!(
                    "the content type is {} bytes, over MQTT's limit of {MAX_STRING}",
                    ct.len()
                ));
            }
            properties += 3 + ct.len();
        }
        for (name, value) in &message.user_properties {
            if let Some(long) = [name, value].into_iter().find(|s| s.len() > MAX_STRING) {
                return Err(format!(
                    "user property `{}` has a {} byte {}, over MQTT's limit of {MAX_STRING}",
                    name.get(..name.len().min(64)).unwrap_or("?"),
                    long.len(),
                    if long == name { "name" } else { "value" }
                ));
            }
            properties += 5 + name.len() + value.len();
        }
        properties += varint_len(properties);
    }
    // Topic, packet id, properties, payload; then the fixed header.
    let remaining = 2 + topic.len() + 2 + properties + message.payload.len();
    let packet = 1 + varint_len(remaining) + remaining;
    if packet > max_packet {
        return Err(format!(
            "the message is {packet} bytes, over the broker's maximum packet size of {max_packet}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_strings_and_packets_are_refused_before_anything_is_written() {
        let message = |ct: Option<String>, props: Vec<(String, String)>, payload: usize| Outgoing {
            payload: vec![b'x'; payload],
            content_type: ct,
            user_properties: props,
        };
        let ok = message(
            Some("application/json".into()),
            vec![("id".into(), "1".into())],
            10,
        );
        assert_eq!(check_limits("a/b", &ok, true, 1024), Ok(()));
        let long = "s".repeat(MAX_STRING + 1);
        let cases = [
            (long.clone(), ok.clone(), "the topic is 65536 bytes"),
            (
                "a".into(),
                message(Some(long.clone()), vec![], 0),
                "content type",
            ),
            (
                "a".into(),
                message(None, vec![("subject".into(), long.clone())], 0),
                "user property `subject` has a 65536 byte value",
            ),
            (
                "a".into(),
                message(None, vec![(long.clone(), "v".into())], 0),
                "byte name",
            ),
            (
                "a".into(),
                message(None, vec![], 2000),
                "maximum packet size of 1024",
            ),
            (String::new(), ok.clone(), "the topic is empty"),
        ];
        for (topic, m, why) in cases {
            let err = check_limits(&topic, &m, true, 1024)
                .err()
                .unwrap_or_default();
            assert!(err.contains(why), "{why}: {err}");
        }
        // MQTT 3.1.1 sends no properties, so only the topic and size count.
        let v4 = message(Some(long), vec![], 10);
        assert_eq!(check_limits("a", &v4, false, 1024), Ok(()));
        // Exactly at the limit passes; one byte over does not.
        let exact = message(None, vec![], 1024 - 1 - 2 - 2 - 1 - 2 - 1);
        assert_eq!(check_limits("a", &exact, true, 1024), Ok(()));
        assert!(check_limits("ab", &exact, true, 1024).is_err());
    }

    fn plain() -> PlainPolicy {
        PlainPolicy {
            event_type: "com.example.plain".into(),
        }
    }

    fn message<'a>(
        payload: &'a [u8],
        content_type: Option<&'a str>,
        user_properties: &'a [(String, String)],
    ) -> Message<'a> {
        Message {
            topic: "sensors/7/temperature",
            payload,
            content_type,
            user_properties,
        }
    }

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn binary_mode_reads_user_properties_and_content_type() -> anyhow::Result<()> {
        let props = props(&[
            ("specversion", "1.0"),
            ("id", "r-1"),
            ("source", "/sensors/7"),
            ("type", "com.example.reading"),
            ("subject", "7"),
            ("site", "plant-3"),
        ]);
        let (wit, _, carried) = decode(
            message(br#"{"celsius":31}"#, Some("application/json"), &props),
            &plain(),
        )?;
        assert_eq!(carried, Carried::Binary);
        assert_eq!(wit.id, "r-1");
        assert_eq!(wit.subject.as_deref(), Some("7"));
        assert_eq!(wit.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(wit.extensions, vec![("site".into(), "plant-3".into())]);
        let out = encode(&wit, &ExtTypes::default(), OutputMode::Binary, true)?;
        let (again, _, _) = decode(
            message(
                &out.payload,
                out.content_type.as_deref(),
                &out.user_properties,
            ),
            &plain(),
        )?;
        assert_eq!(again, wit);
        Ok(())
    }

    #[test]
    fn binary_mode_without_an_id_names_the_missing_user_property() {
        let props = props(&[("specversion", "1.0"), ("source", "/s"), ("type", "t")]);
        let err = decode(message(b"{}", None, &props), &plain())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid CloudEvent: missing user property `id` (MQTT 5 binary mode)")
        );
    }

    #[test]
    fn structured_mode_is_read_with_or_without_the_content_type() -> anyhow::Result<()> {
        let json = br#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":{"v":1}}"#;
        for ct in [Some(STRUCTURED), None] {
            let (event, _, carried) = decode(message(json, ct, &[]), &plain())?;
            assert_eq!(carried, Carried::Structured);
            assert_eq!(event.id, "s-1");
            assert_eq!(event.data.as_deref(), Some(&br#"{"v":1}"#[..]));
        }
        Ok(())
    }

    #[test]
    fn a_broken_structured_event_is_an_error_not_a_plain_payload() {
        let err = decode(
            message(b"{\"specversion\":", Some(STRUCTURED), &[]),
            &plain(),
        );
        assert!(matches!(err, Err(EventError::Json(_))), "{err:?}");
        let missing = decode(
            message(
                br#"{"specversion":"1.0","source":"/s","type":"t"}"#,
                None,
                &[],
            ),
            &plain(),
        );
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.to_string().contains("missing attribute `id`")),
            "{missing:?}"
        );
    }

    #[test]
    fn plain_payloads_are_wrapped_with_the_topic_as_subject() -> anyhow::Result<()> {
        let (event, _, carried) = decode(message(b"{\"celsius\":31}", None, &[]), &plain())?;
        assert_eq!(carried, Carried::Plain);
        assert_eq!(event.type_, "com.example.plain");
        assert_eq!(event.subject.as_deref(), Some("sensors/7/temperature"));
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(event.data.as_deref(), Some(&b"{\"celsius\":31}"[..]));
        let (text, _, _) = decode(message(b"31.5", None, &[]), &plain())?;
        assert_eq!(text.datacontenttype.as_deref(), Some("application/json"));
        let (raw, _, _) = decode(message(&[0xff, 0x00], None, &[]), &plain())?;
        assert_eq!(
            raw.datacontenttype.as_deref(),
            Some("application/octet-stream")
        );
        let (first, _, _) = decode(message(b"x", None, &[]), &plain())?;
        let (second, _, _) = decode(message(b"x", None, &[]), &plain())?;
        assert_ne!(first.id, second.id);
        Ok(())
    }

    #[test]
    fn batches_are_refused_because_the_binding_has_none() {
        let err = decode(message(b"[]", Some(BATCH), &[]), &plain());
        assert!(
            err.is_err_and(|e| e.to_string().contains("no batched mode")),
            "batch accepted"
        );
    }

    #[test]
    fn mqtt_3_cannot_publish_binary_mode() -> anyhow::Result<()> {
        let event = CloudEvent {
            datacontenttype: Some("application/json".into()),
            data: Some(b"{\"a\":1}".to_vec()),
            ..crate::event::test_event(vec![])
        };
        let types = ExtTypes::default();
        assert!(encode(&event, &types, OutputMode::Binary, false).is_err());
        let out = encode(&event, &types, OutputMode::Structured, false)?;
        assert_eq!(out.content_type, None);
        let (back, _, carried) = decode(message(&out.payload, None, &[]), &plain())?;
        assert_eq!(carried, Carried::Structured);
        assert_eq!(back, event);
        Ok(())
    }
}
