fn main() -> std::process::ExitCode {
    settled::cli::settlectl()
}
