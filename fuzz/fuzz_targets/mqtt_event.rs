//! The CloudEvents MQTT binding: topic, payload, MQTT 5 content type and
//! user properties, on either protocol level. The input is text that
//! seeds can be written in (fuzz/README.md):
//!
//! ```text
//! 5                                  protocol level: 3 (3.1.1) or 5
//! sensors/a/temperature              topic
//! application/cloudevents+json       content type; empty for none
//! ce_name: value                     user properties, one a line, to a blank line
//!
//! payload...
//! ```
//!
//! Whatever it accepts must be a valid event that survives the JSON
//! format; an event that came as a CloudEvent must survive being
//! published again (each mode the protocol level allows) and read back.
#![no_main]

use brink_fuzz::{check_accepted, json_value_data, lines};
use brink_host::event::mqtt::{self, Carried, Message, OutputMode, PlainPolicy};
use libfuzzer_sys::fuzz_target;

struct Publish<'a> {
    v5: bool,
    topic: &'a str,
    content_type: Option<&'a str>,
    user_properties: Vec<(String, String)>,
    payload: &'a [u8],
}

fn publish(data: &[u8]) -> Option<Publish<'_>> {
    let (head, mut rest) = lines(data, 3)?;
    let v5 = head[0] == "5";
    let mut user_properties = Vec::new();
    loop {
        let (line, after) = lines(rest, 1)?;
        rest = after;
        if line[0].is_empty() {
            break;
        }
        let (name, value) = line[0].split_once(": ").unwrap_or((line[0], ""));
        user_properties.push((name.to_owned(), value.to_owned()));
    }
    if !v5 {
        // MQTT 3.1.1 has no properties.
        user_properties.clear();
    }
    Some(Publish {
        v5,
        topic: head[1],
        content_type: (v5 && !head[2].is_empty()).then_some(head[2]),
        user_properties,
        payload: rest,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(publish) = publish(data) else {
        return;
    };
    let message = Message {
        topic: publish.topic,
        payload: publish.payload,
        content_type: publish.content_type,
        user_properties: &publish.user_properties,
    };
    let plain = PlainPolicy {
        event_type: "com.example.reading".to_owned(),
    };
    let Ok((event, types, carried)) = mqtt::decode(message, &plain) else {
        return;
    };
    check_accepted(&event, &types);
    if carried == Carried::Plain {
        assert_eq!(event.subject.as_deref(), Some(publish.topic));
        assert_eq!(event.data.as_deref().unwrap_or_default(), publish.payload);
        return;
    }
    let modes: &[OutputMode] = if publish.v5 {
        &[OutputMode::Structured, OutputMode::Binary]
    } else {
        &[OutputMode::Structured]
    };
    for &mode in modes {
        let out = match mqtt::encode(&event, &types, mode, publish.v5) {
            Ok(out) => out,
            Err(e) => panic!("an accepted event cannot be published ({mode:?}): {e}\n{event:?}"),
        };
        let again = Message {
            topic: publish.topic,
            payload: &out.payload,
            content_type: out.content_type.as_deref(),
            user_properties: &out.user_properties,
        };
        let (mut event_again, types_again, _) = match mqtt::decode(again, &plain) {
            Ok(decoded) => decoded,
            Err(e) => panic!("a published event does not read back ({mode:?}): {e}\n{event:?}"),
        };
        let mut expected = event.clone();
        if mode == OutputMode::Binary {
            // Binary mode has no empty data, and no extension types.
            if expected.data.as_ref().is_some_and(Vec::is_empty) {
                expected.data = None;
            }
            if expected.data.is_none() && expected.datacontenttype.is_none() {
                event_again.datacontenttype = None;
            }
        } else {
            // The JSON format carries JSON data as a value (no whitespace around it).
            expected = json_value_data(&expected);
            assert_eq!(types_again, types, "extension types changed ({mode:?})");
        }
        assert_eq!(
            event_again, expected,
            "the event changed when published ({mode:?})"
        );
    }
});
