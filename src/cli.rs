//! The command line every steward service has:
//! `<binary> [--config FILE] [serve | check-config | healthcheck | migrate | doctor]`.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Sources;
use crate::service::Service;
use crate::{app, doctor, healthcheck};

/// Exit code for an unusable configuration (EX_USAGE's neighbour, as documented).
pub const EXIT_CONFIG: i32 = 2;

#[derive(Parser)]
struct Cli {
    /// A TOML file layered over the built-in defaults and config/<STEWARD_ENV>.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print the effective configuration with secrets redacted, or the error (exit code 2).
    CheckConfig,
    /// GET /health/live on the configured port: exit 0 when it answers 200, 1 otherwise.
    Healthcheck,
    /// Apply the database migrations and exit (the service also applies them at start-up).
    Migrate,
    /// Check the configuration, the stores (answering, version, round trip, migrations,
    /// Redis' eviction policy and clock) and, given a Kubernetes manifest, the shutdown
    /// timing; one line per check, exit 1 on any failure.
    Doctor {
        /// A Kubernetes manifest (a Deployment) to check against `[shutdown]`.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Skip the store checks: for CI, where a production configuration's stores are
        /// not reachable.
        #[arg(long)]
        offline: bool,
    },
}

/// Parses the command line, loads the configuration and runs the command; returns the
/// process exit code.
pub(crate) fn run(service: Service) -> i32 {
    let version: &'static str = Box::leak(
        format!(
            "{} (steward {}, {})",
            service.version,
            env!("CARGO_PKG_VERSION"),
            env!("STEWARD_GIT_COMMIT")
        )
        .into_boxed_str(),
    );
    let command = Cli::command()
        .name(service.name)
        .version(version)
        .about(service.about);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let sources = Sources::from_process(cli.config);
    let env = sources
        .env_name
        .clone()
        .unwrap_or_else(|| "development".into());
    let loaded = match service.load_config(&sources) {
        Ok(loaded) => loaded,
        Err(error) if matches!(cli.command, Some(Command::Doctor { .. })) => {
            println!("✗ the configuration does not load: {error} — fix: correct that key");
            return EXIT_CONFIG;
        }
        Err(error) => {
            eprintln!("{error}");
            return EXIT_CONFIG;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => app::serve(service, loaded),
        Command::CheckConfig => {
            print!("{}", loaded.redacted_toml());
            0
        }
        Command::Migrate if !service.backends.postgres => {
            eprintln!("{} uses no database: nothing to migrate", service.name);
            0
        }
        Command::Migrate => app::migrate(&loaded.settings, service.migrations),
        Command::Doctor { manifest, offline } => {
            let stores = !offline;
            doctor::run(
                &service,
                &loaded.settings,
                &env,
                stores,
                manifest.as_deref(),
            )
        }
        Command::Healthcheck => match healthcheck::check(&loaded.settings.server) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("unhealthy: {error}");
                1
            }
        },
    }
}
