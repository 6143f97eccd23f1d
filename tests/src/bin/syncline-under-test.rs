//! The `syncline` binary, built inside the test package so that tests which must kill a
//! real server process (SIGKILL) can find it through `CARGO_BIN_EXE_syncline-under-test`.

fn main() -> std::process::ExitCode {
    syncline_server::cli::main()
}
