//! MQTT topic filters and output templates:
//! - filter matching agrees with a plain reference matcher written from
//!   MQTT 3.1.1 §4.7, for every filter the manifest's rule accepts;
//! - a template the manifest accepts renders, for any event, either to a
//!   topic with no wildcard or NUL, or to an error; never a panic;
//! - a template with no placeholders renders to itself.
//!
//! The input is seven lines: filter, topic, template, then the event's
//! subject (empty for none), type, source and id.
#![no_main]

use brink_fuzz::lines;
use brink_host::bindings::CloudEvent;
use brink_host::manifest::topic::render as render_topic;
use brink_host::node::dispatch::topic_matches;
use brink_host::surface::{check_template, check_topic_filter};
use libfuzzer_sys::fuzz_target;

/// MQTT 3.1.1 §4.7, level by level, written independently of the host's.
fn reference_matches(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    // §4.7.2: a filter starting with a wildcard does not match `$` topics.
    if topic[0].starts_with('$') && (filter[0] == "+" || filter[0] == "#") {
        return false;
    }
    fn walk(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.first(), topic.first()) {
            // `#` matches its parent level and any number of child levels.
            (Some(&"#"), _) => true,
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(&"+"), Some(_)) => walk(&filter[1..], &topic[1..]),
            (Some(f), Some(t)) => f == t && walk(&filter[1..], &topic[1..]),
        }
    }
    walk(&filter, &topic)
}

fuzz_target!(|data: &[u8]| {
    let Some((l, _)) = lines(data, 7) else {
        return;
    };
    let (filter, topic, template) = (l[0], l[1], l[2]);
    if check_topic_filter(filter).is_ok() && !topic.is_empty() {
        assert_eq!(
            topic_matches(filter, topic),
            reference_matches(filter, topic),
            "filter {filter:?} on topic {topic:?}"
        );
    }
    if check_template(template).is_ok() {
        let event = CloudEvent {
            id: l[6].to_owned(),
            source: l[5].to_owned(),
            type_: l[4].to_owned(),
            specversion: "1.0".to_owned(),
            subject: (!l[3].is_empty()).then(|| l[3].to_owned()),
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: Vec::new(),
            data: None,
        };
        if let Ok(rendered) = render_topic(template, &event) {
            assert!(!rendered.is_empty(), "empty topic from {template:?}");
            assert!(
                !rendered.contains(['+', '#', '\0']),
                "template {template:?} rendered the unpublishable topic {rendered:?}"
            );
        }
        if !template.contains('{') {
            assert_eq!(
                render_topic(template, &event).ok().as_deref(),
                Some(template)
            );
        }
    }
});
