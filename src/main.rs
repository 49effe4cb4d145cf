//! The `steward` binary: parse the command line, run, exit with the code it returns.

fn main() {
    std::process::exit(steward::cli::run());
}
