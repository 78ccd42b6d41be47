//! The `stowage` command line. See `stowage --help`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`stowage plan | head`) is not an error.
            let broken_pipe = |e: &(dyn std::error::Error + 'static)| {
                let pipe = Some(std::io::ErrorKind::BrokenPipe);
                e.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == pipe
                    || e.downcast_ref::<serde_json::Error>()
                        .and_then(|j| j.io_error_kind())
                        == pipe
            };
            if err.chain().any(broken_pipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
