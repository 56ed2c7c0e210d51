//! The `causeway-cni` executable: reads the CNI environment and stdin, dispatches, prints the result or
//! the error JSON on stdout, and exits non-zero on error. Diagnostics go to stderr only.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;

use causeway_cni::env::ProcessEnv;
use causeway_cni::error::{CniError, code};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => causeway_cni::dispatch(&ProcessEnv, &stdin),
        Err(e) => Err(CniError::new(code::IO, format!("stdin: {e}"))),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => match writeln!(out, "{v}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("causeway-cni: write stdout: {e}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
            let id = std::env::var("CNI_CONTAINERID").unwrap_or_default();
            eprintln!("causeway-cni: {cmd} {id}: {err}");
            let _ = writeln!(out, "{}", err.to_json(&causeway_cni::error_version(&stdin)));
            ExitCode::FAILURE
        }
    }
}
