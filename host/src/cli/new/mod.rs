//! `brink new <rust|python|js> NAME`: a function folder from the templates
//! kept beside this file, ready for `brink build` and `brink run`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::build::Language;

/// A template: each file's path in the new folder and its text, in which
/// `{{name}}` becomes the function's name.
type Template = &'static [(&'static str, &'static str)];

const PYTHON: Template = &[
    ("pyproject.toml", include_str!("python/pyproject.toml")),
    ("app.py", include_str!("python/app.py")),
    ("test_app.py", include_str!("python/test_app.py")),
    ("event.json", include_str!("python/event.json")),
    ("README.md", include_str!("python/README.md")),
    (".gitignore", include_str!("python/gitignore")),
];

const JS: Template = &[
    ("package.json", include_str!("js/package.json")),
    ("index.js", include_str!("js/index.js")),
    ("index.test.js", include_str!("js/index.test.js")),
    ("event.json", include_str!("js/event.json")),
    ("README.md", include_str!("js/README.md")),
    (".gitignore", include_str!("js/gitignore")),
];

/// A Rust function carries the SDK and the contract with it (neither is on
/// crates.io), where the SDK's `generate!` finds the WIT: `brink-sdk/../wit`.
const RUST: Template = &[
    ("Cargo.toml", include_str!("rust/Cargo.toml")),
    ("src/lib.rs", include_str!("rust/lib.rs")),
    ("event.json", include_str!("rust/event.json")),
    ("README.md", include_str!("rust/README.md")),
    (".gitignore", include_str!("rust/gitignore")),
    ("brink-sdk/Cargo.toml", include_str!("rust/sdk-Cargo.toml")),
    (
        "brink-sdk/src/lib.rs",
        include_str!("../../../../guest-sdk/src/lib.rs"),
    ),
    (
        "brink-sdk/src/kv.rs",
        include_str!("../../../../guest-sdk/src/kv.rs"),
    ),
    (
        "brink-sdk/src/nn.rs",
        include_str!("../../../../guest-sdk/src/nn.rs"),
    ),
    (
        "brink-sdk/src/outbox.rs",
        include_str!("../../../../guest-sdk/src/outbox.rs"),
    ),
];

#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The function's language.
    language: Language,
    /// The function's name: lowercase letters, digits and `-`.
    name: String,
    /// Where to write it [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(crate) fn new(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let template = match args.language {
        Language::Python => PYTHON,
        Language::Js => JS,
        Language::Rust => RUST,
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    write(&dir, template, &args.name)?;
    if args.language == Language::Rust {
        brink_host::languages::world::write_contract(&dir.join("wit"))?;
    }
    eprintln!(
        "created {} ({}); next: `brink build {0}` and `brink run {0} --event {0}/event.json`",
        dir.display(),
        language_word(args.language)
    );
    Ok(())
}

fn language_word(language: Language) -> &'static str {
    match language {
        Language::Rust => "rust",
        Language::Python => "python",
        Language::Js => "js",
    }
}

/// A name that is a package name in all three languages and a file stem.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "{name:?} is not a function name: use lowercase letters, digits and `-`, \
             starting with a letter (at most 64), e.g. `hello` or `line-filter`"
        );
    }
    Ok(())
}

/// Writes `template` into `dir`, which must not exist or be empty, so that
/// nothing of the user's is overwritten.
fn write(dir: &Path, template: Template, name: &str) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty; choose another name or --dir",
                dir.display()
            );
        }
    }
    for (path, text) in template {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text.replace("{{name}}", name))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_package_names_are_refused() {
        for bad in [
            "",
            "Hello",
            "1st",
            "a_b",
            "a-",
            "a/b",
            "..",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["hello", "line-filter", "f2"] {
            assert!(check_name(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn a_folder_with_files_is_never_overwritten() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("app.py"), "mine")?;
        assert!(write(dir.path(), PYTHON, "hello").is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join("app.py"))?, "mine");
        Ok(())
    }

    #[test]
    fn the_template_names_the_function_everywhere() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        write(&dir.path().join("hello"), PYTHON, "hello")?;
        let project = std::fs::read_to_string(dir.path().join("hello/pyproject.toml"))?;
        assert!(project.contains("name = \"hello\""));
        for (language, template) in [("python", PYTHON), ("js", JS), ("rust", RUST)] {
            let dir = dir.path().join(language);
            write(&dir, template, "hello")?;
            for (path, _) in template {
                let text = std::fs::read_to_string(dir.join(path))?;
                assert!(
                    !text.contains("{{name}}"),
                    "{language}: {path} keeps a placeholder"
                );
            }
        }
        Ok(())
    }
}
