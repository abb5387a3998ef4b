/// mimalloc instead of glibc's malloc: the allocator was a quarter of the hub's CPU in the
/// 64-client profile (docs/PERF.md). The library crate does not set an allocator, so
/// embedders of the client SDK keep their own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pos_hub::cli::main()
}
