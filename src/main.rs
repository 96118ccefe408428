//! The `tollgate` binary: everything lives in the library.

/// mimalloc rather than the C library's allocator: every proxied request allocates and frees
/// a few buffers (hyper's 8 KiB read buffer among them), and the container image links musl,
/// whose allocator is slow at exactly that. Measured in `bench/NOTES.md`. Built with
/// `no_thp`: no transparent huge pages (see `cli::main`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tollgate::cli::main()
}
