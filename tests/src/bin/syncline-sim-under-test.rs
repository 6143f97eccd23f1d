//! The `syncline-sim` binary, built inside the test package so that tests can run its load
//! scenarios against an in-process server through `CARGO_BIN_EXE_syncline-sim-under-test`.

fn main() -> std::process::ExitCode {
    syncline_sim::main()
}
