//! Argument parsing and dispatch for the `stowage` binary.

mod backend;
mod convert;
mod demo;
mod diff;
mod load;
mod plan;
mod run;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (bad input, unreadable files, a model that cannot be placed)
  2  usage error";

/// Plan where every tensor of a model goes (GPUs, CPU RAM, disk), without loading it.
#[derive(Parser, Debug)]
#[command(name = "stowage", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// More logs on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// No notes on stderr, only errors
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Colour on stderr and in tables
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute a device map for a model and print it as a table or as JSON
    Plan(Box<plan::PlanArgs>),
    /// Plan, then load every tensor onto its device, and report what it took
    Load(Box<load::LoadArgs>),
    /// Plan, load as a split model, run one forward pass (or generate), show where each unit ran
    Run(Box<run::RunArgs>),
    /// Write a ~1 GiB llama-shaped checkpoint, plan it with part on disk, load it, report
    Demo(demo::DemoArgs),
    /// Show what changes between two plans saved with `stowage plan --json`
    Diff(DiffFiles),
    /// Write a checkpoint (pytorch_model.bin, sharded or not) again as safetensors
    Convert(convert::ConvertArgs),
}

/// Arguments of `stowage diff`.
#[derive(clap::Args, Debug)]
pub struct DiffFiles {
    /// The first plan (`stowage plan --json > a.json`)
    a: std::path::PathBuf,
    /// The second plan
    b: std::path::PathBuf,
    /// Print the differences as JSON
    #[arg(long)]
    json: bool,
}

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// When stderr is a terminal and NO_COLOR is unset
    Auto,
    /// Always
    Always,
    /// Never
    Never,
}

/// Global output settings.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Suppress notes.
    pub quiet: bool,
    /// Use colour.
    pub color: bool,
}

impl Output {
    /// Prints a note on stderr unless quiet.
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("note: {msg}");
        }
    }
}

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
        }
    };
    let out = Output {
        quiet: cli.quiet,
        color,
    };
    match cli.command {
        Command::Plan(args) => plan::run(*args, out),
        Command::Load(args) => load::run(*args, out),
        Command::Run(args) => run::run(*args, out),
        Command::Demo(args) => demo::run(args, out),
        Command::Convert(args) => convert::run(args, out),
        Command::Diff(files) => {
            let read = |p: &std::path::Path| -> anyhow::Result<serde_json::Value> {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", p.display()))?;
                serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("`{}` is not a plan saved with --json: {e}", p.display())
                })
            };
            let (a, b) = (read(&files.a)?, read(&files.b)?);
            let mut stdout = std::io::stdout().lock();
            diff::write_diff(&mut stdout, &a, &b, files.json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
