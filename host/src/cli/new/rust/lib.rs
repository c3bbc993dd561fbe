//! {{name}}: answers each event with a greeting.
//!
//! Input data: `{"name": "edge"}`. Config: `greeting` (default `hello`).

use brink_sdk::{Error, Event, Result, config, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Hello {
    name: String,
}

/// Handles one event: the greeting, under a new type.
pub fn handle(event: Event) -> Result<Event> {
    let greeting = config::get("greeting").unwrap_or_else(|| "hello".to_owned());
    let out = greet(&event, &greeting)?;
    log::info(format!("greeted {}", out.subject.as_deref().unwrap_or_default()));
    Ok(out)
}

/// The greeting for `event`: plain logic, so it is unit-testable on the host.
pub fn greet(event: &Event, greeting: &str) -> Result<Event> {
    let hello: Hello = event.json()?;
    if hello.name.is_empty() {
        return Err(Error::invalid_event(format!("event {} has an empty name", event.id)));
    }
    Event::new("com.example.greeting", event.source.clone())
        .with_subject(hello.name.clone())
        .with_json(&serde_json::json!({ "message": format!("{greeting}, {}", hello.name) }))
}

brink_sdk::handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(data: serde_json::Value) -> Result<Event> {
        Event::new("com.example.hello", "/cli").with_json(&data)
    }

    #[test]
    fn it_greets_the_name_in_the_event() -> Result<()> {
        let out = greet(&hello(serde_json::json!({"name": "edge"}))?, "hi")?;
        assert_eq!(out.subject.as_deref(), Some("edge"));
        assert_eq!(out.json::<serde_json::Value>()?, serde_json::json!({"message": "hi, edge"}));
        Ok(())
    }

    #[test]
    fn an_event_without_a_name_is_invalid() -> Result<()> {
        let err = greet(&hello(serde_json::json!({}))?, "hi").err();
        use brink_sdk::bindings::brink::edge::types::ErrorKind;
        assert!(matches!(err.map(|e| e.kind()), Some(ErrorKind::InvalidEvent)));
        Ok(())
    }
}
