//! Why a manifest was refused, and where in its text.

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A well-formed file whose content is wrong; `at` is the (line,
    /// column) of the setting at fault, when the error names one.
    #[error("{path}{}: {message}", at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        path: String,
        at: Option<(usize, usize)>,
        message: String,
    },
}

/// A well-formed manifest whose content is wrong: the message, and the
/// setting at fault (`function.a.outputs[1]`), which [`super::Manifest::parse`]
/// turns into a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub setting: Option<String>,
    pub message: String,
}

impl Invalid {
    /// `message`, about `setting`.
    pub fn at(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: Some(setting.into()),
            message: message.into(),
        }
    }

    /// `message`, about no one setting.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            setting: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}

/// `Err(Invalid)` for the first setting of `settings` that is zero:
/// `"<prefix><field>: must be above 0"`.
pub(super) fn above_zero(prefix: &str, settings: &[(&str, bool)]) -> Result<(), Invalid> {
    match settings.iter().find(|(_, zero)| *zero) {
        Some((field, _)) => Err(Invalid::at(
            format!("{prefix}{field}"),
            format!("{prefix}{field}: must be above 0"),
        )),
        None => Ok(()),
    }
}

/// What a name used as a key (an app, an uplink, a model, a bucket) must be.
pub const NAME_RULE: &str = "must be 1 to 64 characters: a-z, 0-9, '-', '_' or '.'";

/// A name used as a key (`[uplink.<name>]`, an app, a bucket): 1 to 64
/// characters of a-z, 0-9, '-', '_' or '.'.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), Invalid> {
    if crate::kv::valid_bucket_name(name) {
        Ok(())
    } else {
        Err(Invalid::whole(format!("{what} {name:?} {NAME_RULE}")))
    }
}

/// 1-based line and column where `setting` (dotted keys, the last one
/// optionally indexed: `function.a.outputs[1]`) is set in `text`.
pub(super) fn locate(text: &str, setting: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut span = None;
    let mut keys = setting.split('.').peekable();
    while let Some(segment) = keys.next() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let (key, mut value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        span = Some(key.span());
        if let (Some(i), DeValue::Array(items)) = (index, value.get_ref())
            && let Some(item) = items.get(i)
        {
            span = Some(item.span());
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ if keys.peek().is_some() => return None,
            _ => {}
        }
    }
    span.map(|span| line_column(text, span.start))
}

/// 1-based line and column of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
