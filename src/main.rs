#![forbid(unsafe_code)]

use std::process::ExitCode;

use coffer::cli::{Cli, Command};

/// Exit code for a configuration the process cannot start with (EX_USAGE).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        builder.worker_threads(usize::from(args.worker_threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            coffer::serve::init_logging(args.log_format, args.log_level);
            match runtime.block_on(coffer::serve::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let msg = coffer::errors::chain(&e);
                    tracing::error!(error = %msg, "coffer cannot serve");
                    eprintln!("coffer: {msg}");
                    ExitCode::from(EX_USAGE)
                }
            }
        }
        Command::Mount(args) => runtime.block_on(coffer::standin::run(args)),
        Command::Check(args) => coffer::check::run(&args),
    }
}
