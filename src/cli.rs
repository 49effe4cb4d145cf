//! Command line: `steward [--config FILE] [serve | check-config | healthcheck]`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Sources};
use crate::{app, healthcheck};

/// Exit code for an unusable configuration (EX_USAGE's neighbour, as documented).
pub const EXIT_CONFIG: i32 = 2;

#[derive(Parser)]
#[command(
    name = "steward",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STEWARD_GIT_COMMIT"), ")"),
    about = "Actor-based reference REST service on Redis and PostgreSQL"
)]
struct Cli {
    /// A TOML file layered over config/default.toml and config/<STEWARD_ENV>.toml.
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
}

/// Parses the command line, loads the configuration and runs the command; returns the
/// process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let loaded = match config::load(&Sources::from_process(cli.config)) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return EXIT_CONFIG;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => app::serve(loaded.settings),
        Command::CheckConfig => {
            print!("{}", loaded.redacted_toml());
            0
        }
        Command::Migrate => app::migrate(&loaded.settings),
        Command::Healthcheck => match healthcheck::check(&loaded.settings.server) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("unhealthy: {error}");
                1
            }
        },
    }
}
