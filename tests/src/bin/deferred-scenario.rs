//! `deferred-scenario [--mermaid OUT.mmd] [--svg OUT.svg] FILE.scenario…`:
//! runs conformance scenarios through twisted-deferred and prints their
//! traces on stdout.
//!
//! Exit codes: 0 success; 2 a malformed scenario (or malformed arguments);
//! 3 an op this runner does not support yet; 4 a scenario found invalid
//! while running (FORMAT.md, "Invalid scenarios"); 1 a file that cannot be
//! read or written. Messages go to stderr and name the file and line. With
//! several files, each trace is preceded by a `### FILE` line and the exit
//! code is the highest seen.
//!
//! `--mermaid OUT.mmd` and `--svg OUT.svg` (one scenario file only) also
//! write a sequence diagram of the run (Mermaid text, a self-contained SVG;
//! see `integration_tests::scenario::trace_diagram`). The trace on stdout
//! and the exit code are the same as without them; nothing is written when
//! the scenario produces no trace.

use std::process::ExitCode;

use integration_tests::scenario::trace_diagram::diagram_text;

const USAGE: &str = "usage: deferred-scenario [--mermaid OUT.mmd] [--svg OUT.svg] FILE.scenario…";

fn main() -> ExitCode {
    let mut files: Vec<String> = Vec::new();
    let mut mermaid: Option<String> = None;
    let mut svg: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return ExitCode::from(0);
            }
            "--mermaid" | "--svg" => {
                let Some(out) = args.next() else {
                    eprintln!("{arg} needs a file name\n{USAGE}");
                    return ExitCode::from(2);
                };
                if arg == "--mermaid" {
                    mermaid = Some(out);
                } else {
                    svg = Some(out);
                }
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let diagram = mermaid.is_some() || svg.is_some();
    if diagram && files.len() > 1 {
        eprintln!("--mermaid and --svg take one scenario file\n{USAGE}");
        return ExitCode::from(2);
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
            Ok(text) if diagram => match diagram_text(&text) {
                Ok((trace, picture)) => {
                    print!("{trace}");
                    let stem = std::path::Path::new(file)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("scenario");
                    let writes = [
                        mermaid.as_ref().map(|out| (out, picture.mermaid())),
                        svg.as_ref().map(|out| (out, picture.svg(stem))),
                    ];
                    let mut code = 0;
                    for (out, contents) in writes.into_iter().flatten() {
                        if let Err(e) = std::fs::write(out, contents) {
                            eprintln!("{out}: cannot write: {e}");
                            code = 1;
                        }
                    }
                    code
                }
                Err(e) => {
                    eprintln!("{file}: {e}");
                    e.exit_code() as u8
                }
            },
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
