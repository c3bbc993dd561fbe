//! The codec's unit tests: refusals by name, byte-exact round trips, and a
//! property test over generated events.

use super::*;

fn to_json(event: &CloudEvent) -> Result<Vec<u8>, EventError> {
    json::write(event, &ExtTypes::default())
}

fn parse_json(bytes: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    Ok(json::parse(bytes)?.into_iter().map(|(e, _)| e).collect())
}

fn parse_one(json: &str) -> Result<CloudEvent, EventError> {
    json::parse_one(json.as_bytes()).map(|(e, _)| e)
}

fn error_of(json: &str) -> String {
    parse_one(json)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn a_missing_required_attribute_is_named() {
    let err = error_of(r#"{"specversion":"1.0","source":"/s","type":"t"}"#);
    assert!(err.contains("missing attribute `id`"), "{err}");
}

#[test]
fn an_unknown_specversion_is_refused_naming_the_version_read() {
    for version in ["9.9", "0.3"] {
        let err = error_of(&format!(
            r#"{{"specversion":"{version}","id":"1","source":"/s","type":"t"}}"#
        ));
        assert!(err.contains("reads CloudEvents \"1.0\" only"), "{err}");
    }
}

#[test]
fn empty_required_attributes_and_bad_extension_names_are_refused_by_name() {
    let cases = [
        (
            r#""id":"","source":"/s","type":"t""#,
            "attribute `id` is empty",
        ),
        (
            r#""id":"1","source":"","type":"t""#,
            "attribute `source` is empty",
        ),
        (
            r#""id":"1","source":"/s","type":"""#,
            "attribute `type` is empty",
        ),
        (
            r#""id":"1","source":"/s","type":"t","Bad_Name":"x""#,
            "attribute `Bad_Name`",
        ),
        (
            r#""id":"1","source":"/s","type":"t","time":"yesterday""#,
            "attribute `time`",
        ),
        (
            r#""id":1,"source":"/s","type":"t""#,
            "attribute `id` must be a JSON string",
        ),
        (
            r#""id":"1","source":"/s","type":"t","big":12345678901"#,
            "extension `big`",
        ),
        (
            r#""id":"1","source":"/s","type":"t","id":"2""#,
            "attribute `id` appears twice",
        ),
    ];
    for (members, why) in cases {
        let err = error_of(&format!(r#"{{"specversion":"1.0",{members}}}"#));
        assert!(err.contains(why), "{members}: {err}");
    }
}

#[test]
fn json_data_passes_through_as_the_bytes_sent() -> anyhow::Result<()> {
    let data = r#"{"z": 123456789012345678901234567890, "a":[1.50, 2]}"#;
    let (event, types) = json::parse_one(
        format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"d",
            "time":"2026-11-22T10:00:00+02:00","dataschema":"https://Example.COM",
            "myext":"x","exint":42,"exbool":true,"data":{data}}}"#
        )
        .as_bytes(),
    )?;
    assert_eq!(event.data.as_deref(), Some(data.as_bytes()));
    assert_eq!(event.time.as_deref(), Some("2026-11-22T10:00:00+02:00"));
    assert_eq!(event.dataschema.as_deref(), Some("https://Example.COM"));
    let out = String::from_utf8(json::write(&event, &types)?)?;
    assert!(out.contains(&format!(r#""data":{data}"#)), "{out}");
    assert!(out.contains(r#""exint":42,"exbool":true"#), "{out}");
    assert!(out.contains(r#""myext":"x""#), "{out}");
    let (back, back_types) = json::parse_one(out.as_bytes())?;
    assert_eq!((back, back_types), (event.clone(), types.clone()));
    // A function may put text that is no JSON integer where one came in.
    let mut changed = event;
    for (name, value) in &mut changed.extensions {
        if name == "exint" {
            *value = "+5".into();
        }
    }
    let out = json::write(&changed, &types)?;
    assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    assert_eq!(json::parse_one(&out)?.0, changed);
    Ok(())
}

#[test]
fn a_negative_zero_extension_is_an_integer_written_back_as_sent() -> anyhow::Result<()> {
    // Found by the fuzzer: the CloudEvents SDK refuses `-0` (serde_json
    // reads it as the float -0.0); the JSON format allows it as an Integer.
    let (event, types) =
        json::parse_one(br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","seqa":-0}"#)?;
    assert_eq!(types.kind("seqa"), Some(ExtKind::Integer));
    let out = String::from_utf8(json::write(&event, &types)?)?;
    assert!(out.contains(r#""seqa":-0"#), "{out}");
    assert_eq!(json::parse_one(out.as_bytes())?, (event, types));
    let err = error_of(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","seqa":-00}"#);
    assert!(err.contains("invalid number"), "{err}");
    for fraction in ["-0.0", "-0e0"] {
        let text = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","seqa":{fraction}}}"#
        );
        let err = error_of(&text);
        assert!(err.contains("extension `seqa`"), "{fraction}: {err}");
    }
    Ok(())
}

#[test]
fn an_event_of_a_hundred_thousand_extensions_is_read_written_and_checked_for_duplicates()
-> anyhow::Result<()> {
    // Linear in the number of extensions: with a scan per member, this
    // one request of 1.5 MB would cost 10^10 comparisons.
    let members: Vec<String> = (0..100_000).map(|i| format!(r#""x{i}":{i}"#)).collect();
    let text = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t",{}}}"#,
        members.join(",")
    );
    let (event, types) = json::parse_one(text.as_bytes())?;
    assert_eq!(event.extensions.len(), 100_000);
    assert_eq!(types.kind("x99999"), Some(ExtKind::Integer));
    let written = json::write(&event, &types)?;
    assert_eq!(json::parse_one(&written)?, (event.clone(), types));
    let twice = text.replacen(r#""x1":1"#, r#""x2":1"#, 1);
    let err = error_of(&twice);
    assert!(err.contains("`x2` appears twice"), "{err}");
    let mut event = event;
    event.extensions.push(("x5".into(), "again".into()));
    assert!(to_json(&event).is_err_and(|e| e.to_string().contains("appears twice")));
    Ok(())
}

/// A small deterministic generator (xorshift), so the property test
/// below needs no dependency and fails the same way every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A JSON string literal with escapes, quotes and non-ASCII text.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "é", "漢", "🙂", "\\\"", "\\n", "\\u00e9", " ", "/", "%", "0",
        ];
        let n = 1 + self.below(6);
        let body: String = (0..n)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect();
        format!("\"{body}\"")
    }

    /// A JSON value, as text, with big numbers, spacing and nesting.
    fn json(&mut self, depth: u32) -> String {
        match self.below(if depth > 3 { 4 } else { 6 }) {
            0 => "123456789012345678901234567890".to_owned(),
            1 => format!(
                "{}.{}e-{}",
                self.below(1000),
                self.below(100),
                self.below(9)
            ),
            2 => self.text(),
            3 => ["true", "false", "null", "-0"][self.below(4) as usize].to_owned(),
            4 => {
                let items: Vec<String> = (0..self.below(4)).map(|_| self.json(depth + 1)).collect();
                format!("[ {} ]", items.join(" ,"))
            }
            _ => {
                let members: Vec<String> = (0..self.below(4))
                    .map(|i| format!("\"k{}\" :{}", 9 - i, self.json(depth + 1)))
                    .collect();
                format!("{{{}}}", members.join(",\n"))
            }
        }
    }
}

#[test]
fn any_event_that_parses_writes_back_to_the_same_event_and_the_same_data_bytes()
-> anyhow::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..2000 {
        let mut members = vec![
            r#""specversion":"1.0""#.to_owned(),
            format!(r#""id":{}"#, rng.text()),
            format!(r#""source":{}"#, rng.text()),
            format!(r#""type":{}"#, rng.text()),
        ];
        if rng.below(2) == 0 {
            members.push(format!(r#""subject":{}"#, rng.text()));
        }
        for i in 0..rng.below(4) {
            let value = match rng.below(3) {
                0 => rng.text(),
                1 => format!("{}", rng.below(1 << 31) as i64 - (1 << 30)),
                _ => ["true", "false"][rng.below(2) as usize].to_owned(),
            };
            members.push(format!(r#""ext{i}":{value}"#));
        }
        let data = rng.json(0);
        if data != "null" {
            members.push(format!(r#""data":{data}"#));
        }
        let text = format!("{{{}}}", members.join(","));
        let (event, types) = json::parse_one(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("round {round}: {e}: {text}"))?;
        if data != "null" {
            assert_eq!(event.data.as_deref(), Some(data.as_bytes()), "{text}");
        }
        let written = json::write(&event, &types)?;
        let again = json::parse_one(&written)?;
        assert_eq!(again, (event, types), "round {round}: {text}");
    }
    Ok(())
}

#[test]
fn a_member_name_with_escapes_is_read_like_any_other() -> anyhow::Result<()> {
    let event = parse_one(
        r#"{"specversion":"1.0","\u0069d":"1","source":"/s","type":"t","\u0061bc":"x"}"#,
    )?;
    assert_eq!(event.id, "1");
    assert_eq!(event.extensions, vec![("abc".to_owned(), "x".to_owned())]);
    Ok(())
}

#[test]
fn binary_data_is_kept_as_bytes() -> anyhow::Result<()> {
    let mut event = parse_one(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#)?;
    event.datacontenttype = Some("application/octet-stream".into());
    event.data = Some(vec![0, 159, 146, 150]);
    let out: serde_json::Value = serde_json::from_slice(&to_json(&event)?)?;
    assert_eq!(out["data_base64"], "AJ+Slg==");
    assert_eq!(parse_json(&to_json(&event)?)?, vec![event]);
    Ok(())
}

#[test]
fn invalid_output_attributes_are_refused() -> anyhow::Result<()> {
    let good = parse_one(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#)?;
    let mut bad = good.clone();
    bad.type_.clear();
    assert!(to_json(&bad).is_err());
    let mut bad = good.clone();
    bad.time = Some("yesterday".into());
    assert!(to_json(&bad).is_err());
    let mut bad = good.clone();
    bad.extensions = vec![("Bad-Name".into(), "x".into())];
    assert!(to_json(&bad).is_err());
    let mut bad = good;
    bad.datacontenttype = Some("application/json".into());
    bad.data = Some(b"not json".to_vec());
    assert!(to_json(&bad).is_err());
    Ok(())
}

#[test]
fn json_data_sent_as_base64_with_a_trailing_newline_is_written_as_the_same_json_value()
-> anyhow::Result<()> {
    // Found by the `event_json` fuzz target: `{}\n` as data_base64 with a JSON
    // content type. The JSON format carries JSON data as a value, so the
    // newline around it cannot travel; the value does, and the second trip
    // changes nothing.
    let sent = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data_base64":"e30K"}"#;
    let (event, types) = json::parse_one(sent.as_bytes())?;
    assert_eq!(event.data.as_deref(), Some(&b"{}\n"[..]));
    let written = json::write(&event, &types)?;
    let (again, again_types) = json::parse_one(&written)?;
    assert_eq!(again.data.as_deref(), Some(&b"{}"[..]));
    assert_eq!(json::write(&again, &again_types)?, written);
    Ok(())
}

#[test]
fn json_data_that_is_not_utf8_is_refused_in_every_binding_not_written_as_broken_json()
-> anyhow::Result<()> {
    // Found by the `http_event` fuzz target: serde_json does not check the
    // bytes of a string it skips, so `{"valu\x9f": 31.5}` passed as JSON data,
    // and the JSON format then carried it as JSON nothing could read back
    // (an outbox entry that never forwards, an unreadable HTTP answer).
    let body = b"{\"valu\x9f\": 31.5}";
    let mut headers = ::http::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("content-type", "application/json"),
    ] {
        headers.insert(name, ::http::HeaderValue::from_static(value));
    }
    let err = http::decode(&headers, body).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("not UTF-8")),
        "{err:?}"
    );

    let properties: Vec<(String, String)> = [
        ("specversion", "1.0"),
        ("id", "1"),
        ("source", "/s"),
        ("type", "t"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let message = mqtt::Message {
        topic: "a/b",
        payload: body,
        content_type: Some("application/json"),
        user_properties: &properties,
    };
    let plain = mqtt::PlainPolicy {
        event_type: "t".into(),
    };
    assert!(mqtt::decode(message, &plain).is_err());

    // A plain payload like it is wrapped as bytes, and travels as base64.
    let plain_message = mqtt::Message {
        user_properties: &[],
        content_type: None,
        ..message
    };
    let (event, types, _) = mqtt::decode(plain_message, &plain)?;
    assert_eq!(
        event.datacontenttype.as_deref(),
        Some("application/octet-stream")
    );
    let written = json::write(&event, &types)?;
    assert!(json::parse_one(&written).is_ok());
    Ok(())
}

#[test]
fn a_datacontenttype_that_is_not_a_media_type_is_refused_by_name() {
    // Found by the `http_event` fuzz target: `application/\x7fctet-stream`
    // was accepted, and then could not leave as a webhook's Content-Type.
    for bad in [
        "application/\u{7f}ctet-stream",
        "json",
        "application/",
        "text/plain; charset=\u{e9}",
        "a b/c",
    ] {
        let event = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":{}}}"#,
            serde_json::to_string(bad).unwrap_or_default()
        );
        let err = error_of(&event);
        assert!(
            err.contains("attribute `datacontenttype`") && err.contains("media type"),
            "{bad:?}: {err}"
        );
    }
    for good in [
        "application/json",
        "text/plain; charset=utf-8",
        "application/vnd.example+json",
        "image/svg+xml",
    ] {
        let event = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"{good}"}}"#
        );
        assert!(parse_one(&event).is_ok(), "{good}");
    }
}

#[test]
fn data_that_is_not_a_string_under_a_type_that_is_not_json_is_refused_as_the_sdk_refuses_it() {
    // Found by the `event_json` differential: `cloudevents-sdk` refuses an
    // object as `data` when datacontenttype is not JSON; so do we, naming
    // the two ways to send it.
    let err = error_of(
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/xml","data":{"a":1}}"#,
    );
    assert!(
        err.contains("`data` must be a JSON string") && err.contains("data_base64"),
        "{err}"
    );
    let ok = parse_one(
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/xml","data":"<a/>"}"#,
    );
    assert_eq!(ok.ok().and_then(|e| e.data), Some(b"<a/>".to_vec()));
}

#[test]
fn json_data_with_a_lone_surrogate_is_refused_in_data_and_in_data_base64() {
    // Found by the `event_json` differential: `"\ud800"` names no character;
    // serde_json (and so the CloudEvents SDK) will not read it as a value.
    for data in [r#"{"\ud800\"lb": 2}"#, r#""\udc00""#, r#""\ud800\u0041""#] {
        let err = error_of(&format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{data}}}"#
        ));
        assert!(err.contains("lone surrogate"), "{data}: {err}");
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
        let err = error_of(&format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data_base64":"{encoded}"}}"#
        ));
        assert!(err.contains("lone surrogate"), "{data}: {err}");
    }
    // A pair is one character, and passes as sent.
    let ok = parse_one(
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"\ud83d\ude00 \\u"}"#,
    );
    assert_eq!(
        ok.ok().and_then(|e| e.data),
        Some(br#""\ud83d\ude00 \\u""#.to_vec())
    );
}
