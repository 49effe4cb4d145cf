//! The hello binary: the command line every steward service has (`serve`, `check-config`,
//! `healthcheck`, `migrate`) around [`hello::service`].
fn main() -> std::process::ExitCode {
    hello::service().run()
}
