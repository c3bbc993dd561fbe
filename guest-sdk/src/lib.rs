//! Write Brink edge functions in Rust.
//!
//! A function is a plain Rust function from one [`Event`] to zero, one or many
//! events, exported with [`handler!`] and built for `wasm32-wasip2`
//! (`brink build`):
//!
//! ```
//! use brink_sdk::{Event, Result};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Reading {
//!     device: String,
//!     value: f64,
//! }
//!
//! /// Doubles every reading and re-emits it with a new type.
//! fn handle(event: Event) -> Result<Event> {
//!     let mut reading: Reading = event.json()?;
//!     reading.value *= 2.0;
//!     Event::new("com.example.reading.doubled", event.source.clone())
//!         .with_subject(reading.device.clone())
//!         .with_json(&reading)
//! }
//!
//! brink_sdk::handler!(handle);
//!
//! # fn main() -> Result<()> {
//! // Handlers are plain functions, so they are unit-testable on the host.
//! let input = Event::new("com.example.reading", "/sensors/line-1")
//!     .with_json(&Reading { device: "t-1".into(), value: 21.5 })?;
//! let output = handle(input)?;
//! assert_eq!(output.type_, "com.example.reading.doubled");
//! assert_eq!(output.json::<Reading>()?.value, 43.0);
//! # Ok(())
//! # }
//! ```
//!
//! Handlers may return `Result<Event>`, `Result<Option<Event>>` (none drops
//! the event) or `Result<Vec<Event>>`. Failures are [`Error`]s with a kind
//! that tells the host whether retrying can help.

extern crate self as brink_sdk;

pub mod kv;
pub mod nn;
pub mod outbox;

use std::fmt;
use std::str::FromStr;

/// The raw bindings generated from `wit/` (`brink:edge/function`).
#[allow(missing_docs, missing_debug_implementations, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "brink:edge/function",
        pub_export_macro: true,
        default_bindings_module: "::brink_sdk::bindings",
        runtime_path: "::brink_sdk::__private::wit_bindgen::rt",
        generate_all,
    });
}

use bindings::brink::edge::types::{ErrorKind, HandlerError};

/// A CloudEvent, as received and emitted by a function.
///
/// This is the contract's `cloud-event` record; fields are public, and the
/// builder methods below cover the common cases.
pub use bindings::brink::edge::types::CloudEvent as Event;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Event {
    /// A new event with the given `type` and `source`.
    ///
    /// The id is left empty: the host assigns a unique one when the event is
    /// emitted. Set one with [`Event::with_id`] to make it stable.
    pub fn new(ty: impl Into<String>, source: impl Into<String>) -> Self {
        Event {
            id: String::new(),
            source: source.into(),
            type_: ty.into(),
            specversion: "1.0".to_owned(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: Vec::new(),
            data: None,
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the subject, e.g. the device the event is about.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the time (RFC 3339).
    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Sets an extension attribute, replacing one of the same name.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let value = value.into();
        match self.extensions.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.extensions.push((name, value)),
        }
        self
    }

    /// Sets the data and its media type.
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.datacontenttype = Some(content_type.into());
        self.data = Some(data.into());
        self
    }

    /// Sets the data to `value` as JSON (`application/json`).
    pub fn with_json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("cannot encode event data as JSON: {e}")))?;
        Ok(self.with_data("application/json", bytes))
    }

    /// The data, or an empty slice when the event has none.
    pub fn data_bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }

    /// Decodes the data as JSON into `T`.
    ///
    /// Fails with [`ErrorKind::InvalidEvent`] when there is no data or it does
    /// not decode, since retrying the same event cannot help.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| Error::invalid_event(format!("event {} has no data", self.id)))?;
        serde_json::from_slice(data).map_err(|e| {
            Error::invalid_event(format!(
                "event {} data is not the JSON this function expects ({}): {e}",
                self.id,
                std::any::type_name::<T>()
            ))
        })
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A handler failure: what the guest reports instead of trapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// The event cannot be handled by this function; retrying will not help.
    pub fn invalid_event(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidEvent,
            message: message.into(),
        }
    }

    /// A transient failure; the host may retry the event.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    /// Any other failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message the host logs and reports.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        HandlerError {
            kind: e.kind,
            message: e.message,
        }
    }
}

/// What a handler may return: any number of events.
pub trait IntoEvents {
    /// The events to emit, in order.
    fn into_events(self) -> Vec<Event>;
}

impl IntoEvents for Event {
    fn into_events(self) -> Vec<Event> {
        vec![self]
    }
}

impl IntoEvents for Option<Event> {
    fn into_events(self) -> Vec<Event> {
        self.into_iter().collect()
    }
}

impl IntoEvents for Vec<Event> {
    fn into_events(self) -> Vec<Event> {
        self
    }
}

impl IntoEvents for () {
    fn into_events(self) -> Vec<Event> {
        Vec::new()
    }
}

/// Configuration values from the function's spec (`config = { key = "value" }`).
pub mod config {
    use super::{Error, FromStr, Result};

    /// The raw value of `key`, if the spec sets it.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::brink::edge::config::get(key)
    }

    /// The value of `key` parsed as `T`, or `None` when it is not set.
    pub fn get_parsed<T>(key: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        get(key)
            .map(|raw| {
                raw.parse::<T>().map_err(|e| {
                    Error::internal(format!(
                        "config `{key}` = {raw:?} is not a valid {}: {e}",
                        std::any::type_name::<T>()
                    ))
                })
            })
            .transpose()
    }

    /// The value of `key` parsed as `T`; an error when it is not set.
    pub fn require<T>(key: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        get_parsed(key)?.ok_or_else(|| {
            Error::internal(format!("config `{key}` is not set in the function's spec"))
        })
    }

    /// The value of `key` parsed as `T`, or `default` when it is not set.
    pub fn get_or<T>(key: &str, default: T) -> Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(get_parsed(key)?.unwrap_or(default))
    }
}

/// Logging into the host's log, tagged with the function and the event id.
pub mod log {
    use crate::bindings::brink::edge::log::{Level, log};

    /// Logs at trace level.
    pub fn trace(message: impl AsRef<str>) {
        log(Level::Trace, message.as_ref());
    }

    /// Logs at debug level.
    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message.as_ref());
    }

    /// Logs at info level.
    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message.as_ref());
    }

    /// Logs at warn level.
    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message.as_ref());
    }

    /// Logs at error level.
    pub fn error(message: impl AsRef<str>) {
        log(Level::Error, message.as_ref());
    }
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::{Event, HandlerError, IntoEvents, Result};

    pub fn dispatch<O: IntoEvents>(
        handler: impl FnOnce(Event) -> Result<O>,
        event: Event,
    ) -> core::result::Result<Vec<Event>, HandlerError> {
        handler(event)
            .map(IntoEvents::into_events)
            .map_err(Into::into)
    }
}

/// Exports `handler` (a `fn(Event) -> Result<impl IntoEvents>`) as the
/// function's `brink:edge/handler`.
#[macro_export]
macro_rules! handler {
    ($handler:path) => {
        #[doc(hidden)]
        pub struct __BrinkHandler;

        impl $crate::bindings::exports::brink::edge::handler::Guest for __BrinkHandler {
            fn handle(
                event: $crate::Event,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::Event>,
                $crate::bindings::brink::edge::types::HandlerError,
            > {
                $crate::__private::dispatch($handler, event)
            }
        }

        $crate::bindings::export!(__BrinkHandler with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_replaced_not_duplicated() {
        let e = Event::new("t", "s")
            .with_extension("site", "a")
            .with_extension("site", "b");
        assert_eq!(e.extensions, vec![("site".to_owned(), "b".to_owned())]);
        assert_eq!(e.extension("site"), Some("b"));
    }

    #[test]
    fn undecodable_data_is_an_invalid_event_error() {
        let e = Event::new("t", "s").with_data("application/json", b"{not json".to_vec());
        let err = e.json::<serde_json::Value>().err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidEvent));
    }

    #[test]
    fn handlers_may_return_nothing_one_or_many_events() {
        assert!(None::<Event>.into_events().is_empty());
        assert_eq!(Event::new("t", "s").into_events().len(), 1);
        assert_eq!(vec![Event::new("t", "s"); 3].into_events().len(), 3);
    }
}
