//! `deferred-scenario FILE.scenario…`: runs conformance scenarios through
//! twisted-deferred and prints their traces on stdout.
//!
//! Exit codes: 0 success; 2 a malformed scenario; 3 an op this runner does
//! not support yet; 4 a scenario found invalid while running (FORMAT.md,
//! "Invalid scenarios"); 1 a file that cannot be read. Messages go to stderr
//! and name the file and line. With several files, each trace is preceded by
//! a `### FILE` line and the exit code is the highest seen.

use std::process::ExitCode;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.iter().any(|f| f == "-h" || f == "--help") {
        eprintln!("usage: deferred-scenario FILE.scenario…");
        return ExitCode::from(if files.is_empty() { 2 } else { 0 });
    }
    let many = files.len() > 1;
    let mut worst = 0u8;
    for file in &files {
        if many {
            println!("### {file}");
        }
        let code = match std::fs::read_to_string(file) {
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                1
            }
            Ok(text) => match integration_tests::scenario::run_text(&text) {
                Ok(trace) => {
                    print!("{trace}");
                    0
                }
                Err(e) => {
                    eprintln!("{file}: {e}");
                    e.exit_code() as u8
                }
            },
        };
        worst = worst.max(code);
    }
    ExitCode::from(worst)
}
