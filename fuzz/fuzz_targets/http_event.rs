//! The CloudEvents HTTP binding as the listener meets it: the input is a
//! raw HTTP/1.1 request (seeded with the test suites' requests), whose
//! headers and body go to `event::http::decode` in binary, structured or
//! batched mode. Whatever it accepts must be a valid event that survives
//! the JSON format, and each event must also survive binary mode (encode,
//! then decode) unchanged.
#![no_main]

use brink_fuzz::check_accepted;
use brink_host::event::http::{self as binding, Mode};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The head and body of a raw request, as hyper would hand them over.
fn request(data: &[u8]) -> Option<(HeaderMap, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(data).ok()? else {
        return None;
    };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some((map, &data[len..]))
}

fuzz_target!(|data: &[u8]| {
    let Some((headers, body)) = request(data) else {
        return;
    };
    let Ok(events) = binding::decode(&headers, body) else {
        return;
    };
    assert!(!events.is_empty(), "a request was accepted with no event");
    if binding::mode(&headers) != Mode::Batched {
        assert_eq!(events.len(), 1, "one request, one event, unless batched");
    }
    for (event, types) in &events {
        check_accepted(event, types);
        let (headers, body) = match binding::encode_binary(event) {
            Ok(encoded) => encoded,
            Err(e) => panic!("an accepted event cannot go out in binary mode: {e}\n{event:?}"),
        };
        let mut again = match binding::decode(&headers, &body) {
            Ok(mut decoded) if decoded.len() == 1 => decoded.remove(0).0,
            other => panic!("binary mode did not read back one event: {other:?}\n{event:?}"),
        };
        // Binary mode always names the data's type; without data there is none.
        let mut expected = event.clone();
        if expected.data.as_ref().is_some_and(Vec::is_empty) {
            expected.data = None;
        }
        if expected.data.is_none() || expected.datacontenttype.is_none() {
            again.datacontenttype = expected.datacontenttype.clone();
        }
        assert_eq!(
            again, expected,
            "the event changed in a binary-mode round trip"
        );
    }
});
