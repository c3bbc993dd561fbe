//! W3C Trace Context on CloudEvents: the distributed-tracing extension's
//! `traceparent` and `tracestate` attributes, which every binding carries
//! (a JSON attribute, `ce-traceparent` in HTTP binary mode, an MQTT 5 user
//! property), and which the node puts on every event it sends on.

use std::cell::Cell;

use crate::bindings::CloudEvent;

/// The extension attributes the distributed-tracing extension names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// The longest `tracestate` kept: W3C asks vendors to pass on at least 512
/// characters, and a device's longer one would ride on every span and
/// every event sent on; past it, the state is dropped (the trace goes on).
const MAX_TRACESTATE: usize = 512;

/// A span's context and the `tracestate` that goes with it.
pub type Parent = (SpanContext, Option<String>);

tokio::task_local! {
    /// The trigger's receive span, for the dispatches of the event it
    /// received: carried beside the event, not in it, so a guest sees the
    /// event as it was sent and the node stamps nothing on the way in.
    pub static RECEIVED: Parent;
}

/// The receive span's context, in a task the trigger scoped with it.
pub fn received() -> Option<Parent> {
    RECEIVED.try_with(Clone::clone).ok()
}

/// Where a span sits in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The `sampled` flag: whether the trace is being recorded.
    pub sampled: bool,
}

impl SpanContext {
    /// Reads `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`. A later
    /// version's header is read by its first four fields, as the standard
    /// says; an invalid one (all-zero ids, version ff, upper case) is `None`
    /// and the event starts a new trace.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let bytes = header.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && bytes.get(55) != Some(&b'-')) {
            return None;
        }
        let mut parts = header.get(..55)?.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version == "ff" || (version == "00" && bytes.len() != 55) {
            return None;
        }
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if ![version, trace, span, flags].into_iter().all(lower_hex) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` value.
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(55);
        self.write_header(&mut out);
        out
    }

    /// Writes the `traceparent` value into `out`, replacing what it held:
    /// an event that already carries one is stamped in place, with no
    /// allocation, as every event a traced node passes on is.
    pub fn write_header(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.clear();
        out.push_str("00-");
        for byte in self.trace_id {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
        out.push('-');
        for byte in self.span_id {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
        out.push_str(if self.sampled { "-01" } else { "-00" });
    }
}

/// The context an event carries, and its `tracestate`.
pub fn of_event(event: &CloudEvent) -> Option<Parent> {
    let value = |wanted: &str| {
        event
            .extensions
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.as_str())
    };
    parse(value(TRACEPARENT), value(TRACESTATE))
}

/// The context `traceparent` and `tracestate` values name (an event's
/// attributes, or an HTTP request's headers). An oversized or unprintable
/// `tracestate` is dropped; the trace goes on.
pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Parent> {
    let parent = SpanContext::parse(traceparent?)?;
    let state = tracestate
        .filter(|v| v.len() <= MAX_TRACESTATE && v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .map(str::to_owned);
    Some((parent, state))
}

/// Puts `context` (and `state`) on `event`, replacing what it carried.
/// A `traceparent` it already carries (a guest's output copied from its
/// input, most often) is overwritten where it is.
pub fn stamp(event: &mut CloudEvent, context: &SpanContext, state: Option<&str>) {
    let mut parent = None;
    event
        .extensions
        .retain_mut(|(name, value)| match name.as_str() {
            TRACEPARENT if parent.is_none() => {
                context.write_header(value);
                parent = Some(());
                true
            }
            TRACEPARENT | TRACESTATE => false,
            _ => true,
        });
    if parent.is_none() {
        event
            .extensions
            .push((TRACEPARENT.to_owned(), context.header()));
    }
    if let Some(state) = state {
        event
            .extensions
            .push((TRACESTATE.to_owned(), state.to_owned()));
    }
}

thread_local! {
    /// A splitmix64 stream per thread, seeded from the operating system:
    /// ids must be unique, not secret, and cost nanoseconds.
    static IDS: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness, the clock and the thread still tell streams apart.
    if getrandom::getrandom(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (now as u64).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

fn next() -> u64 {
    IDS.with(|state| {
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A new, non-zero span id.
pub fn span_id() -> [u8; 8] {
    loop {
        let id = next().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A new, non-zero trace id.
pub fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&span_id());
    id[8..].copy_from_slice(&next().to_be_bytes());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_round_trips_and_invalid_ones_start_a_new_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = SpanContext::parse(header);
        assert_eq!(context.map(|c| c.header()).as_deref(), Some(header));
        assert_eq!(context.map(|c| c.sampled), Some(true));
        let unsampled =
            SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|c| c.sampled), Some(false));
        // A later version with more fields is read by its first four.
        assert!(
            SpanContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0é736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_oversized_or_unprintable_tracestate_is_dropped_and_the_trace_goes_on()
    -> anyhow::Result<()> {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let event = |state: String| {
            crate::event::test_event(vec![
                (TRACEPARENT.into(), header.into()),
                (TRACESTATE.into(), state),
            ])
        };
        let kept = of_event(&event("k=v".into()));
        assert_eq!(kept.and_then(|(_, s)| s).as_deref(), Some("k=v"));
        for hostile in ["k=".to_owned() + &"v".repeat(600), "k=\nv".to_owned()] {
            let (context, state) =
                of_event(&event(hostile)).ok_or_else(|| anyhow::anyhow!("context lost"))?;
            assert_eq!(context.header(), header);
            assert_eq!(state, None);
        }
        Ok(())
    }

    #[test]
    fn stamping_replaces_the_context_an_event_carried_and_keeps_the_rest() {
        let context = SpanContext {
            trace_id: trace_id(),
            span_id: span_id(),
            sampled: true,
        };
        let ext = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut event = crate::event::test_event(ext(&[
            ("site", "a"),
            (TRACEPARENT, "00-old"),
            (TRACESTATE, "old=1"),
            (TRACEPARENT, "00-twice"),
            ("line", "2"),
        ]));
        stamp(&mut event, &context, None);
        let header = context.header();
        assert_eq!(
            event.extensions,
            ext(&[("site", "a"), (TRACEPARENT, &header), ("line", "2")])
        );
        stamp(&mut event, &context, Some("k=v"));
        assert_eq!(
            event.extensions,
            ext(&[
                ("site", "a"),
                (TRACEPARENT, &header),
                ("line", "2"),
                (TRACESTATE, "k=v"),
            ])
        );
        event.extensions.clear();
        stamp(&mut event, &context, None);
        assert_eq!(event.extensions, ext(&[(TRACEPARENT, &header)]));
        assert_eq!(of_event(&event), Some((context, None)));
    }

    #[test]
    fn ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<[u8; 16]> = (0..10_000).map(|_| trace_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 16]));
    }
}
