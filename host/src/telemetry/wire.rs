//! OTLP's `ExportTraceServiceRequest`, written straight from the node's
//! spans into one buffer.
//!
//! Building opentelemetry-proto's message types first cost about twenty
//! allocations a span (a `String` for every attribute's key and value, a
//! `Vec` for every id), and a traced node makes four spans an event; on a
//! two-core node that was CPU taken from the events. The field numbers are
//! those of `opentelemetry/proto/trace/v1/trace.proto` and
//! `common/v1/common.proto`; a test decodes the output with the
//! opentelemetry-proto types, field by field.

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::{Kind, Name, SpanData, Value};

/// The parts of a request that are the same in every post, encoded once.
pub(super) struct Envelope {
    /// `ResourceSpans.resource` (field 1), key and length included.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), key and length included.
    scope: Vec<u8>,
}

impl Envelope {
    pub(super) fn new(resource: &opentelemetry_proto::tonic::resource::v1::Resource) -> Self {
        let scope = opentelemetry_proto::tonic::common::v1::InstrumentationScope {
            name: "brink".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        };
        let mut envelope = Self {
            resource: Vec::new(),
            scope: Vec::new(),
        };
        message_field(&mut envelope.resource, 1, &resource.encode_to_vec());
        message_field(&mut envelope.scope, 1, &scope.encode_to_vec());
        envelope
    }

    /// The request with `spans`, as protobuf; `scratch` is reused between
    /// posts.
    pub(super) fn encode<'a>(
        &self,
        spans: impl Iterator<Item = &'a SpanData>,
        scratch: &mut Vec<u8>,
    ) -> Vec<u8> {
        scratch.clear();
        scratch.extend_from_slice(&self.scope);
        for span in spans {
            // ScopeSpans.spans (field 2).
            encode_key(2, WireType::LengthDelimited, scratch);
            encode_varint(span_len(span) as u64, scratch);
            write_span(span, scratch);
        }
        let scope_spans = scratch.len();
        let resource_spans = self.resource.len() + field_len(2, scope_spans);
        let mut out = Vec::with_capacity(field_len(1, resource_spans));
        // ExportTraceServiceRequest.resource_spans (1) → ResourceSpans.
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans as u64, &mut out);
        out.extend_from_slice(&self.resource);
        // ResourceSpans.scope_spans (2) → ScopeSpans.
        message_field(&mut out, 2, scratch);
        out
    }
}

/// The size of a length-delimited field of `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn message_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn name_len(name: &Name) -> usize {
    match name {
        Name::Static(s) => s.len(),
        Name::Of(verb, what) => verb.len() + 1 + what.len(),
    }
}

fn value_str(value: &Value) -> Option<&str> {
    match value {
        Value::Str(s) => Some(s),
        Value::Shared(s) => Some(s),
        Value::Int(_) | Value::Bool(_) => None,
    }
}

/// `AnyValue`'s size: `string_value` 1, `bool_value` 2, `int_value` 3.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Int(n) => key_len(3) + encoded_len_varint(*n as u64),
        Value::Bool(_) => key_len(2) + 1,
        Value::Str(_) | Value::Shared(_) => field_len(1, value_str(value).map_or(0, str::len)),
    }
}

/// `KeyValue`'s size: `key` 1, `value` 2.
fn key_value_len(key: &str, value: &Value) -> usize {
    field_len(1, key.len()) + field_len(2, any_value_len(value))
}

/// `Status`'s size: `message` 2, `code` 3 (1 ok, 2 error).
fn status_len(error: Option<&str>) -> usize {
    error.map_or(0, |m| field_len(2, m.len())) + key_len(3) + 1
}

fn span_len(s: &SpanData) -> usize {
    let mut len = field_len(1, 16) + field_len(2, 8);
    if let Some(state) = s.state.as_deref().filter(|s| !s.is_empty()) {
        len += field_len(3, state.len());
    }
    if s.parent.is_some() {
        len += field_len(4, 8);
    }
    len += field_len(5, name_len(&s.name));
    len += key_len(6) + 1;
    len += 2 * (key_len(7) + 8);
    for (key, value) in s.attributes.iter() {
        len += field_len(9, key_value_len(key, value));
    }
    len += field_len(15, status_len(s.error.as_deref()));
    if s.context.sampled {
        len += key_len(16) + 4;
    }
    len
}

fn bytes_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    message_field(buf, tag, bytes);
}

fn write_span(s: &SpanData, buf: &mut Vec<u8>) {
    bytes_field(buf, 1, &s.context.trace_id);
    bytes_field(buf, 2, &s.context.span_id);
    if let Some(state) = s.state.as_deref().filter(|s| !s.is_empty()) {
        bytes_field(buf, 3, state.as_bytes());
    }
    if let Some(parent) = &s.parent {
        bytes_field(buf, 4, parent);
    }
    encode_key(5, WireType::LengthDelimited, buf);
    encode_varint(name_len(&s.name) as u64, buf);
    match &s.name {
        Name::Static(n) => buf.extend_from_slice(n.as_bytes()),
        Name::Of(verb, what) => {
            buf.extend_from_slice(verb.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(what.as_bytes());
        }
    }
    // SpanKind: internal 1, server 2, client 3, producer 4, consumer 5.
    let kind = match s.kind {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    };
    encode_key(6, WireType::Varint, buf);
    encode_varint(kind, buf);
    for (tag, ns) in [(7, s.start_ns), (8, s.end_ns)] {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&ns.to_le_bytes());
    }
    for (key, value) in s.attributes.iter() {
        encode_key(9, WireType::LengthDelimited, buf);
        encode_varint(key_value_len(key, value) as u64, buf);
        bytes_field(buf, 1, key.as_bytes());
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(any_value_len(value) as u64, buf);
        match value {
            Value::Int(n) => {
                encode_key(3, WireType::Varint, buf);
                encode_varint(*n as u64, buf);
            }
            Value::Bool(b) => {
                encode_key(2, WireType::Varint, buf);
                buf.push(u8::from(*b));
            }
            Value::Str(_) | Value::Shared(_) => {
                bytes_field(buf, 1, value_str(value).unwrap_or_default().as_bytes());
            }
        }
    }
    let error = s.error.as_deref();
    encode_key(15, WireType::LengthDelimited, buf);
    encode_varint(status_len(error) as u64, buf);
    if let Some(message) = error {
        bytes_field(buf, 2, message.as_bytes());
    }
    encode_key(3, WireType::Varint, buf);
    buf.push(if error.is_some() { 2 } else { 1 });
    if s.context.sampled {
        encode_key(16, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&1u32.to_le_bytes());
    }
}
