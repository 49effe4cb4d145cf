//! The `steward` binary: the reference service, with steward's command line.

fn main() -> std::process::ExitCode {
    steward_reference::service().run()
}
