//! The `syncline-sim` binary: everything is in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    syncline_sim::main()
}
