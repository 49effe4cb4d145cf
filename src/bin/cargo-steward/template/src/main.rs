//! The {{name}} binary: steward's command line (`serve`, `check-config`, `healthcheck`,
//! `migrate`, `doctor`) around [`{{crate_name}}::service`].

fn main() -> std::process::ExitCode {
    {{crate_name}}::service().run()
}
