//! The kboot binary: parse, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    kboot::cli::main()
}
