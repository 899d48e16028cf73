//! The `authgate` binary: parse the command line and hand over to [`authgate::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    authgate::cli::main()
}
