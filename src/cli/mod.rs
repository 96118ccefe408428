//! The command line: argument parsing, subcommand dispatch and exit codes. The only module
//! that touches the process (argv, environment, stdout, signals).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod check;
mod demo;
pub mod dev;
pub mod explain;
mod run;
pub mod token;

/// An authenticating sidecar proxy for Entra ID tokens and managed identities.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration file is.
#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "TOLLGATE_CONFIG",
        default_value = "tollgate.toml",
        value_name = "FILE"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Run(ConfigArg),
    /// Parse and validate a configuration file; print a summary and warnings.
    Check(ConfigArg),
    /// Show what tollgate would do with one request: route, token checks, decision, headers.
    Explain(explain::ExplainArgs),
    /// Run the proxy in front of a built-in echo backend on loopback, with example routes.
    Demo(demo::DemoArgs),
    /// Local development without Azure: a local issuer, an identity endpoint speaking the
    /// IMDS and App Service protocols, and an Entra-like sign-in provider (authorize, token,
    /// logout), over http and https; `dev token` mints a token from the same issuer.
    Dev(dev::DevArgs),
    /// Acquire an egress target's token once; print its expiry and claims.
    Token(token::TokenArgs),
}

/// Runs the command line and returns the process exit code: 0 for success, 1 for a failure
/// (invalid configuration, a listener that could not be bound), 2 for bad arguments, and for
/// `explain` 3 when the request would be refused.
pub fn main() -> ExitCode {
    // No transparent huge pages: with them, every 2 MiB of heap that holds a few bytes of a
    // connection's buffers is resident whole (17.6 MiB idle and ~33 KiB per idle keep-alive
    // connection with them, 10.3 MiB and ~21 KiB without: bench/idle-memory.sh). mimalloc is
    // built not to ask for them (`no_thp`); this also refuses them on hosts whose THP setting
    // is "always" rather than "madvise". The few allocations made before `main` may already
    // sit in huge pages there.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args.config),
        Command::Check(args) => check::check(&args.config),
        Command::Explain(args) => explain::explain(&args),
        Command::Demo(args) => demo::demo(&args),
        Command::Dev(args) => dev::dev(&args),
        Command::Token(args) => token::token(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tollgate: {}", describe(&*error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: inner: ...`, each cause once. Most of
/// tollgate's errors already end with their cause's text, so that a log line holding only
/// the error says why; a cause whose text is already there is not repeated.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// The process environment, shareable with the application.
fn process_env() -> crate::config::SharedEnv {
    std::sync::Arc::new(crate::config::process_env)
}
