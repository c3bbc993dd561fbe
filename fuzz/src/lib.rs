//! What the fuzz targets share: the checks every decoded event must pass,
//! and the line format of the seedable targets.

use brink_host::bindings::CloudEvent;
use brink_host::event::{self, ExtTypes};

/// How errors name attributes when a target re-validates an event.
pub fn attribute(name: &str) -> String {
    format!("attribute `{name}`")
}

/// What every event a parser accepted must satisfy: it is valid, and the
/// JSON format writes it to bytes that parse back to the same event and
/// extension types, and writes those again to the same bytes.
pub fn check_accepted(event: &CloudEvent, types: &ExtTypes) {
    if let Err(e) = event::validate(event, attribute) {
        panic!("an accepted event is invalid: {e}\n{event:?}");
    }
    let written = match event::json::write(event, types) {
        Ok(bytes) => bytes,
        Err(e) => panic!("an accepted event cannot be written: {e}\n{event:?}"),
    };
    let (again, again_types) = match event::json::parse_one(&written) {
        Ok(parsed) => parsed,
        Err(e) => panic!(
            "the JSON written for an accepted event does not parse: {e}\n{}",
            String::from_utf8_lossy(&written)
        ),
    };
    assert_eq!(
        again,
        json_value_data(event),
        "the event changed in a JSON round trip"
    );
    assert_eq!(
        &again_types, types,
        "extension types changed in a JSON round trip"
    );
    let rewritten = event::json::write(&again, &again_types).unwrap_or_default();
    assert_eq!(
        rewritten, written,
        "writing a re-parsed event gave other bytes"
    );
}

/// `event` as the JSON format carries it: JSON data is a JSON value, so
/// whitespace around it (`{}\n` sent in binary mode or as `data_base64`)
/// is not part of it. Everything else must come back byte for byte.
pub fn json_value_data(event: &CloudEvent) -> CloudEvent {
    let mut event = event.clone();
    let json_typed = event
        .datacontenttype
        .as_deref()
        .is_none_or(event::is_json_type);
    if let Some(data) = &mut event.data
        && json_typed
        && event::is_json(data)
    {
        *data = data.trim_ascii().to_vec();
    }
    event
}

/// Splits fuzz input into its first `n` lines (UTF-8, without the `\n`)
/// and the bytes after them: the text formats the seedable targets take
/// (see fuzz/README.md). None when the input has fewer lines or a line is
/// not UTF-8.
pub fn lines(data: &[u8], n: usize) -> Option<(Vec<&str>, &[u8])> {
    let mut rest = data;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let end = rest.iter().position(|b| *b == b'\n')?;
        out.push(std::str::from_utf8(&rest[..end]).ok()?);
        rest = &rest[end + 1..];
    }
    Some((out, rest))
}
