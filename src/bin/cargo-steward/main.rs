//! `cargo steward new <name>`: writes a new service crate on steward, with everything a team
//! needs on its first day: `src/` on the public API, its own config section, a smoke test on
//! `steward::testing`, a Dockerfile, a compose file, Kubernetes manifests whose timing fits the
//! shutdown sequence, and the same two commands as steward's own README (`bash .ci/serve`,
//! `bash .ci/test`).
//!
//! Installed with `cargo install --path <steward> --bin cargo-steward`, it runs as a cargo
//! subcommand; from a checkout, `cargo run --bin cargo-steward -- new <name>` does the same.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo-steward", bin_name = "cargo steward", version)]
#[command(about = "Tools for services built on steward")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new service crate into a new folder.
    New {
        /// The service's name: lowercase letters, digits and dashes, starting with a letter.
        name: String,
        /// Where to write it (default: a folder named after the service); must not exist, or
        /// be empty.
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// Depend on the steward at this path (default: the checkout this command was built
        /// from, while it exists; otherwise this command's version from the registry).
        #[arg(long, value_name = "DIR", conflicts_with = "steward_version")]
        steward_path: Option<PathBuf>,
        /// Depend on this version of steward from the registry.
        #[arg(long, value_name = "VERSION")]
        steward_version: Option<String>,
    },
}

/// A file of the template: its path in the new crate, its text, and whether it is a script.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

/// Declares a template file from `template/<path>`.
macro_rules! file {
    ($path:literal) => {
        file!($path, false)
    };
    ($path:literal, $executable:expr) => {
        File {
            path: $path,
            text: include_str!(concat!("template/", $path)),
            executable: $executable,
        }
    };
}

/// Everything the generator writes. `.ci/stores.sh` is steward's own, so that a new service
/// sets its stores up exactly as steward's CI does.
const FILES: &[File] = &[
    file!("Cargo.toml"),
    file!("README.md"),
    file!(".gitignore"),
    file!("src/main.rs"),
    file!("src/lib.rs"),
    file!("config/default.toml"),
    file!("config/development.toml"),
    file!("config/production.toml"),
    file!("tests/smoke.rs"),
    file!("Dockerfile"),
    file!("compose.yaml"),
    file!("deploy/kubernetes/deployment.yaml"),
    file!(".ci/run", true),
    file!(".ci/test", true),
    file!(".ci/serve", true),
    File {
        path: ".ci/stores.sh",
        text: include_str!("../../../.ci/stores.sh"),
        executable: true,
    },
];

/// Words a crate cannot be named.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "steward", "test",
];

/// Why `name` cannot name a service, if it cannot.
fn invalid_name(name: &str) -> Option<String> {
    let well_formed = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        return Some(format!(
            "{name:?}: a name is 1 to 40 lowercase letters, digits and single dashes, starting \
             with a letter"
        ));
    }
    let crate_name = name.replace('-', "_");
    KEYWORDS
        .contains(&crate_name.as_str())
        .then(|| format!("{name:?} is a reserved word in Rust (or steward's own name)"))
}

/// The `steward = …` dependency, without and with the `testing` feature.
fn steward_dependency(path: Option<PathBuf>, version: Option<String>) -> (String, String) {
    let built_from = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = path.or_else(|| {
        (version.is_none() && built_from.join("Cargo.toml").exists()).then_some(built_from)
    });
    let source = match path {
        Some(path) => {
            let path = path.canonicalize().unwrap_or(path);
            format!("path = {}", toml::Value::String(path.display().to_string()))
        }
        None => {
            let version = version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
            format!("version = {}", toml::Value::String(version))
        }
    };
    (
        format!("{{ {source} }}"),
        format!("{{ {source}, features = [\"testing\"] }}"),
    )
}

/// Writes the template into `dir` for the service `name`.
fn generate(dir: &Path, name: &str, steward: &(String, String)) -> io::Result<()> {
    let crate_name = name.replace('-', "_");
    for file in FILES {
        let text = file
            .text
            .replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{steward}}", &steward.0)
            .replace("{{steward_testing}}", &steward.1);
        let target = dir.join(file.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, text)?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // As a cargo subcommand, cargo passes the subcommand's name first: `cargo-steward steward new`.
    let args = std::env::args_os()
        .enumerate()
        .filter(|(index, arg)| !(*index == 1 && arg == "steward"))
        .map(|(_, arg)| arg);
    let Command::New {
        name,
        path,
        steward_path,
        steward_version,
    } = Cli::parse_from(args).command;
    if let Some(why) = invalid_name(&name) {
        eprintln!("cargo steward new: {why}");
        return ExitCode::from(2);
    }
    let dir = path.unwrap_or_else(|| PathBuf::from(&name));
    let occupied = fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        eprintln!(
            "cargo steward new: {} exists and is not empty",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let steward = steward_dependency(steward_path, steward_version);
    if let Err(error) = generate(&dir, &name, &steward) {
        eprintln!("cargo steward new: cannot write {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    println!("Created {name} in {}; next:", dir.display());
    println!(
        "  cd {} && bash .ci/test    # set up the stores, run the tests",
        dir.display()
    );
    println!("  bash .ci/serve             # run it on http://127.0.0.1:8080");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_written() {
        assert_eq!(invalid_name("billing-api"), None);
        for bad in [
            "",
            "Billing",
            "9lives",
            "a_b",
            "a--b",
            "trailing-",
            "self",
            "type",
            "steward",
        ] {
            assert!(invalid_name(bad).is_some(), "{bad:?} accepted");
        }
        assert!(invalid_name(&"a".repeat(41)).is_some());
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = std::env::temp_dir().join(format!("cargo-steward-{}", std::process::id()));
        let steward = steward_dependency(Some(PathBuf::from("/opt/steward")), None);
        generate(&dir, "billing-api", &steward).unwrap();
        for file in FILES {
            let text = fs::read_to_string(dir.join(file.path)).unwrap();
            assert!(!text.contains("{{"), "{} keeps a placeholder", file.path);
        }
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let parsed: toml::Table = manifest.parse().expect("valid TOML");
        assert_eq!(parsed["package"]["name"].as_str(), Some("billing-api"));
        assert_eq!(
            parsed["dependencies"]["steward"]["path"].as_str(),
            Some("/opt/steward")
        );
        let main = fs::read_to_string(dir.join("src/main.rs")).unwrap();
        assert!(main.contains("billing_api::service().run()"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
