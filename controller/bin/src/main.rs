//! `causeway`: the edge controller and proxy in one process.
//!
//! Subcommands (design §4): `run` (default) watches a source — a manifests directory today, the Kubernetes API
//! through `causeway-kube` — translates it into a [`causeway_model::RouteTable`] and hot-swaps it into the proxy;
//! `routes` prints the compiled table and its diagnostics as JSON and exits; `check` validates a manifests
//! directory and exits non-zero on errors; `demo` runs `run` on the bundled demo with its demo backends.
//!
//! What it deliberately does not do: no logic of its own beyond wiring. Parsing and translation live in
//! `causeway-source` / `causeway-translate`, serving in `causeway-proxy`.

mod cli;
mod demo;
mod run;

use clap::Parser;
use cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(cli.run));
    let log_format = match &command {
        Command::Run(args) | Command::Demo(cli::DemoArgs { run: args, .. }) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
    let result = match command {
        Command::Run(args) => run::run_blocking(args, None),
        Command::Demo(args) => run::demo_blocking(args),
        Command::Routes(args) => run::routes(args),
        Command::Check(args) => run::check(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(message = "Causeway stopped.", error = format!("{error:#}"));
            eprintln!("causeway: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
