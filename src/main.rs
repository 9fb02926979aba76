//! The `blocklab` binary: everything lives in the library; see `blocklab --help`.

fn main() -> std::process::ExitCode {
    blocklab::cli::main()
}
