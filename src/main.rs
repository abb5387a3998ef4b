fn main() -> std::process::ExitCode {
    pos_hub::cli::main()
}
