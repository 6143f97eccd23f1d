//! The `syncline` binary.

fn main() -> std::process::ExitCode {
    syncline_server::cli::main()
}
