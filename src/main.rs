//! The `tollgate` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    tollgate::cli::main()
}
