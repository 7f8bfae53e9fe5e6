//! `cargo run --release -p benches --bin compare [-- OPTIONS]`: runs
//! Twisted's own Deferred benchmarks (CPython, and PyPy when `pypy3` is
//! installed) and ours on this machine in one go, and prints a table: case,
//! Twisted's median, ours, the ratio, the closest futures/tokio code, the
//! floor, our distance from it, and allocations per operation; then the
//! allocation profile; its last line is a one-line verdict on the targets.
//!
//! Options:
//!   --quick        a rougher table, fast (fewer and shorter samples; the
//!                  Python side skips its 1M rows)
//!   --no-python    skip the Python columns
//!   --no-pypy      skip PyPy only
//!   --all          also time and list every other variant
//!   --only TEXT    only the rows whose key contains TEXT (repeatable)
//!   --no-alloc     skip the allocation counts
//!
//! The Python side is `benches/python/twisted_cases.py`; when `python3`
//! cannot import Twisted, a venv is made under `target/bench-venv-cpython`
//! with `pip install twisted==26.10.0` (PyPy: `target/bench-venv-pypy`, the
//! newest Twisted its Python supports). `TWISTED_PYTHON` / `TWISTED_PYPY`
//! name other interpreters.
//!
//! Targets (the issue's): on Twisted's cases at least 50x faster than
//! CPython and 5x faster than PyPy; every row within 2x of its floor; none
//! slower than its closest futures/tokio code by more than 1.5x; gather,
//! DeferredList, chain depth and timers linear from 10k to 1M (time per
//! element at 1M at most 2x that at 10k).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use benches::alloc::{self, CountingAlloc};
use benches::measure::{self, Measurement, Settings};
use benches::{Role, Row};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The pinned Twisted for CPython (the version the conformance suite uses).
const TWISTED: &str = "twisted==26.10.0";

const CPYTHON_FACTOR: f64 = 50.0;
const PYPY_FACTOR: f64 = 5.0;
const FLOOR_FACTOR: f64 = 2.0;
const FUTURES_FACTOR: f64 = 1.5;
const LINEAR_FACTOR: f64 = 2.0;

struct Options {
    quick: bool,
    python: bool,
    pypy: bool,
    all: bool,
    only: Vec<String>,
    alloc: bool,
}

fn parse_args() -> Options {
    let mut o = Options {
        quick: false,
        python: true,
        pypy: true,
        all: false,
        only: Vec::new(),
        alloc: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-python" => o.python = false,
            "--no-pypy" => o.pypy = false,
            "--all" => o.all = true,
            "--no-alloc" => o.alloc = false,
            "--only" => o
                .only
                .push(args.next().unwrap_or_else(|| usage("--only needs a value"))),
            "-h" | "--help" => {
                println!(
                    "compare [--quick] [--no-python] [--no-pypy] [--all] [--only TEXT]... [--no-alloc]"
                );
                std::process::exit(0);
            }
            other => usage(&format!("unknown option {other}")),
        }
    }
    o
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "compare: {msg}\nusage: compare [--quick] [--no-python] [--no-pypy] [--all] [--only TEXT]... [--no-alloc]"
    );
    std::process::exit(2)
}

/// One Python implementation's results.
struct PyResults {
    label: String,
    twisted: String,
    medians: HashMap<String, f64>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("..").join("target"))
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn imports_twisted(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import twisted.internet.defer"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An interpreter that imports Twisted: `env_var`, `program` itself, or a
/// venv made from `program` under `target/` with `requirement` installed.
fn python_with_twisted(
    env_var: &str,
    program: &str,
    venv: &str,
    requirement: &str,
) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if imports_twisted(&p) {
            Ok(p)
        } else {
            Err(format!("{env_var}={} cannot import twisted", p.display()))
        };
    }
    if !on_path(program) {
        return Err(format!("{program} is not installed"));
    }
    if imports_twisted(Path::new(program)) {
        return Ok(PathBuf::from(program));
    }
    let dir = target_dir().join(venv);
    let python = dir.join("bin").join("python");
    if python.exists() && imports_twisted(&python) {
        return Ok(python);
    }
    eprintln!(
        "compare: {program} has no Twisted; making {} with {requirement}",
        dir.display()
    );
    let made = Command::new(program)
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .map_err(|e| format!("{program} -m venv: {e}"))?;
    if !made.success() {
        return Err(format!("{program} -m venv {} failed", dir.display()));
    }
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("pip: {e}"))?;
    if !pip.success() || !imports_twisted(&python) {
        return Err(format!(
            "pip install {requirement} into {} failed",
            dir.display()
        ));
    }
    Ok(python)
}

fn run_python(python: &Path, keys: &[String], quick: bool) -> Result<PyResults, String> {
    let script = manifest_dir().join("python").join("twisted_cases.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg("--tsv").arg("--verbose");
    if quick {
        cmd.arg("--quick");
    }
    cmd.arg("--only").arg(keys.join(","));
    cmd.stderr(Stdio::inherit());
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{} {} failed", python.display(), script.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = PyResults {
        label: String::new(),
        twisted: String::new(),
        medians: HashMap::new(),
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["# implementation", v] => r.label = v.to_string(),
            ["# twisted", v] => r.twisted = v.to_string(),
            [key, ns, ..] if !key.starts_with('#') => {
                if let Ok(ns) = ns.parse::<f64>() {
                    r.medians.insert(key.to_string(), ns);
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// The cases of the Python script (its `--list`), to know which rows it has.
fn python_keys(python: &Path) -> Vec<String> {
    let script = manifest_dir().join("python").join("twisted_cases.py");
    Command::new(python)
        .arg(&script)
        .arg("--list")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What was measured for one row.
struct RowResult {
    ours: Option<Measurement>,
    closest: Option<(&'static str, Measurement)>,
    floor: Option<(&'static str, Measurement)>,
    others: Vec<(&'static str, Role, Measurement)>,
    allocs_ours: Option<f64>,
    allocs_floor: Option<f64>,
    allocs_closest: Option<f64>,
}

fn fmt_ns(ns: f64) -> String {
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

fn fmt_allocs(a: Option<f64>) -> String {
    match a {
        None => "–".into(),
        Some(a) if (a - a.round()).abs() < 0.005 => format!("{}", a.round() as i64),
        Some(a) => format!("{a:.2}"),
    }
}

/// Allocation-count iterations for a row: enough for 1,000 elements.
fn alloc_iters(row: &Row) -> u64 {
    1000u64.div_ceil(row.elements).max(1)
}

fn count_allocs(row: &Row, role: Role) -> Option<f64> {
    let case = row.by_role(role)?;
    let iters = alloc_iters(row);
    let (counts, _) = alloc::count(|| (case.run)(iters))?;
    Some(counts.allocs as f64 / (iters * row.elements) as f64)
}

/// glibc hands freed memory at the top of the heap back to the system
/// (`malloc_trim`) once it exceeds a threshold, and the next iteration
/// page-faults it back in: whether a case pays that depends on where its
/// last free lands, not on its code (a data structure change in one case
/// moved its time from 93 ns to 175 ns per element while its instruction
/// count fell by a quarter). The comparison runs with trimming off, for
/// every case alike, by re-running itself with the glibc tunable set;
/// `BENCHES_KEEP_TRIM=1` keeps glibc's default.
fn run_without_heap_trimming() -> Option<std::process::ExitCode> {
    const TUNABLE: &str = "glibc.malloc.trim_threshold=1099511627776";
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || std::env::var_os("BENCHES_KEEP_TRIM").is_some()
    {
        return None;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.trim_threshold=") {
        return None;
    }
    let tunables = if current.is_empty() {
        TUNABLE.to_string()
    } else {
        format!("{current}:{TUNABLE}")
    };
    let exe = std::env::current_exe().ok()?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", tunables)
        .status()
        .ok()?;
    Some(match status.code() {
        Some(0) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    })
}

fn main() -> std::process::ExitCode {
    if let Some(code) = run_without_heap_trimming() {
        return code;
    }
    compare();
    std::process::ExitCode::SUCCESS
}

fn compare() {
    let opts = parse_args();
    let started = Instant::now();
    let settings = if opts.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let rows: Vec<Row> = benches::rows()
        .into_iter()
        .filter(|r| opts.only.is_empty() || opts.only.iter().any(|o| r.key.contains(o.as_str())))
        .collect();
    let keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();

    // Python first, alone on the machine.
    let mut notes: Vec<String> = Vec::new();
    let mut pythons: Vec<PyResults> = Vec::new();
    if opts.python {
        let mut candidates = vec![(
            "CPython",
            "TWISTED_PYTHON",
            "python3",
            "bench-venv-cpython",
            TWISTED,
        )];
        if opts.pypy {
            candidates.push((
                "PyPy",
                "TWISTED_PYPY",
                "pypy3",
                "bench-venv-pypy",
                "twisted",
            ));
        }
        for (name, env_var, program, venv, requirement) in candidates {
            match python_with_twisted(env_var, program, venv, requirement) {
                Ok(python) => {
                    let known = python_keys(&python);
                    let wanted: Vec<String> = keys
                        .iter()
                        .filter(|k| known.contains(k))
                        .filter(|k| !(opts.quick && k.ends_with("/1000000")))
                        .cloned()
                        .collect();
                    eprintln!("compare: timing Twisted on {name} ({})", python.display());
                    match run_python(&python, &wanted, opts.quick) {
                        Ok(r) => pythons.push(r),
                        Err(e) => notes.push(format!("{name}: {e}")),
                    }
                }
                Err(e) => {
                    let hint = if program == "pypy3" {
                        " (Debian: apt-get install pypy3 pypy3-venv)"
                    } else {
                        ""
                    };
                    notes.push(format!("{name} column skipped: {e}{hint}"));
                }
            }
        }
    }
    let cpython = pythons.iter().find(|p| p.label.starts_with("CPython"));
    let pypy = pythons.iter().find(|p| p.label.starts_with("PyPy"));

    // Ours, the futures/tokio code and the floors.
    let mut results: Vec<RowResult> = Vec::new();
    for row in &rows {
        let row_started = Instant::now();
        let mut r = RowResult {
            ours: None,
            closest: None,
            floor: None,
            others: Vec::new(),
            allocs_ours: None,
            allocs_floor: None,
            allocs_closest: None,
        };
        for case in &row.cases {
            let wanted = matches!(case.role, Role::Ours | Role::Closest | Role::Floor) || opts.all;
            if !wanted {
                continue;
            }
            let m = measure::measure(&case.run, row.heavy, &settings);
            let per = m.ns() / row.elements as f64;
            eprintln!(
                "compare: {} {}: {} per {}",
                row.key,
                case.name,
                fmt_ns(per),
                if row.elements > 1 {
                    "element"
                } else {
                    "iteration"
                }
            );
            match case.role {
                Role::Ours => r.ours = Some(m),
                Role::Closest => r.closest = Some((case.name, m)),
                Role::Floor => r.floor = Some((case.name, m)),
                role => r.others.push((case.name, role, m)),
            }
        }
        // --quick counts the allocations of the light rows only (a heavy
        // row's count per element is its 100k sibling's)
        if opts.alloc && !(opts.quick && row.heavy) {
            r.allocs_ours = count_allocs(row, Role::Ours);
            r.allocs_floor = count_allocs(row, Role::Floor);
            r.allocs_closest = count_allocs(row, Role::Closest);
        }
        eprintln!(
            "compare: {} done in {:.1} s",
            row.key,
            row_started.elapsed().as_secs_f64()
        );
        results.push(r);
    }

    // Linearity: per-element time at the largest size over the smallest.
    let mut by_family: HashMap<&str, Vec<(u64, f64)>> = HashMap::new();
    for (row, r) in rows.iter().zip(&results) {
        if let (Some((family, n)), Some(m)) = (row.scaling, r.ours) {
            by_family
                .entry(family)
                .or_default()
                .push((n, m.ns() / row.elements as f64));
        }
    }
    let growth = |family: &str| -> Option<f64> {
        let v = by_family.get(family)?;
        let small = v.iter().min_by_key(|(n, _)| *n)?;
        let large = v.iter().max_by_key(|(n, _)| *n)?;
        (large.0 > small.0).then(|| large.1 / small.1)
    };

    // The table.
    let mut out = String::new();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let _ = writeln!(
        out,
        "\n{} run, {} cores, load average {} at the end; {}{}; medians{}.\n",
        if opts.quick {
            "Quick (--quick)"
        } else {
            "Full"
        },
        cores,
        load,
        match cpython {
            Some(p) => format!("Twisted {} on {}", p.twisted, p.label),
            None => "no CPython".into(),
        },
        match pypy {
            Some(p) => format!(", Twisted {} on {}", p.twisted, p.label),
            None => ", no PyPy".into(),
        },
        if opts.quick {
            "; Python skips its 1M rows"
        } else {
            ""
        },
    );
    let _ = writeln!(
        out,
        "| case | Twisted CPython | PyPy | ours | CPython ÷ ours | PyPy ÷ ours | futures/tokio | ours ÷ it | floor | ours ÷ floor | allocs ours / futures / floor | targets |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut met_all = 0usize;
    let mut missed: HashMap<&str, usize> = HashMap::new();
    let mut misses_listed: Vec<String> = Vec::new();
    let mut beyond_floor_count = 0usize;
    let mut futures_miss_too_count = 0usize;
    for (row, r) in rows.iter().zip(&results) {
        let per = |ns: f64| ns / row.elements as f64;
        let ours = r.ours.map(|m| per(m.ns()));
        let cpy = cpython
            .and_then(|p| p.medians.get(&row.key))
            .map(|&ns| per(ns));
        let pp = pypy
            .and_then(|p| p.medians.get(&row.key))
            .map(|&ns| per(ns));
        let closest = r.closest.map(|(_, m)| per(m.ns()));
        let floor = r.floor.map(|(_, m)| per(m.ns()));
        let mut misses: Vec<&str> = Vec::new();
        // Targets the floor itself misses: out of reach of any code doing
        // the job's least work, so of ours too.
        let mut beyond_floor: Vec<&str> = Vec::new();
        // Targets the closest futures/tokio code misses as well.
        let mut futures_miss_too: Vec<&str> = Vec::new();
        let mut checked = 0;
        if let Some(o) = ours {
            if row.twisted {
                if let Some(c) = cpy {
                    checked += 1;
                    if c / o < CPYTHON_FACTOR {
                        misses.push("50x CPython");
                        if floor.is_some_and(|f| c / f < CPYTHON_FACTOR) {
                            beyond_floor.push("50x CPython");
                        }
                    }
                }
                if let Some(p) = pp {
                    checked += 1;
                    if p / o < PYPY_FACTOR {
                        misses.push("5x PyPy");
                        if floor.is_some_and(|f| p / f < PYPY_FACTOR) {
                            beyond_floor.push("5x PyPy");
                        }
                    }
                }
            }
            if let Some(f) = floor {
                checked += 1;
                if o / f > FLOOR_FACTOR {
                    misses.push("2x floor");
                    if closest.is_some_and(|c| c / f > FLOOR_FACTOR) {
                        futures_miss_too.push("2x floor");
                    }
                }
            }
            if let Some(c) = closest {
                checked += 1;
                if o / c > FUTURES_FACTOR {
                    misses.push("1.5x futures");
                    if floor.is_some_and(|f| f / c > FUTURES_FACTOR) {
                        beyond_floor.push("1.5x futures");
                    }
                }
            }
            if let Some((family, n)) = row.scaling
                && by_family
                    .get(family)
                    .is_some_and(|v| v.iter().all(|(m, _)| *m <= n))
                && let Some(g) = growth(family)
            {
                checked += 1;
                if g > LINEAR_FACTOR {
                    misses.push("linear");
                }
            }
        }
        if checked > 0 && misses.is_empty() {
            met_all += 1;
        }
        for m in &misses {
            *missed.entry(m).or_default() += 1;
        }
        beyond_floor_count += beyond_floor.len();
        futures_miss_too_count += futures_miss_too.len();
        let marked: Vec<String> = misses
            .iter()
            .map(|m| {
                if beyond_floor.contains(m) {
                    format!("{m}†")
                } else if futures_miss_too.contains(m) {
                    format!("{m}‡")
                } else {
                    m.to_string()
                }
            })
            .collect();
        if !misses.is_empty() {
            misses_listed.push(format!("{} ({})", row.key, marked.join(", ")));
        }
        let opt = |v: Option<f64>| v.map(fmt_ns).unwrap_or_else(|| "–".into());
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => fmt_ratio(a / b),
            _ => "–".into(),
        };
        let mut title = row.title.clone();
        if let Some((family, n)) = row.scaling
            && by_family
                .get(family)
                .is_some_and(|v| v.iter().all(|(m, _)| *m <= n))
            && let Some(g) = growth(family)
        {
            let _ = write!(
                title,
                "; per-element growth 10k→{}: {}",
                short_n(n),
                fmt_ratio(g)
            );
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} |",
            title,
            opt(cpy),
            opt(pp),
            opt(ours),
            ratio(cpy, ours),
            ratio(pp, ours),
            match r.closest {
                Some((name, _)) => format!("{} `{name}`", opt(closest)),
                None => "–".into(),
            },
            ratio(ours, closest),
            opt(floor),
            ratio(ours, floor),
            fmt_allocs(r.allocs_ours),
            fmt_allocs(r.allocs_closest),
            fmt_allocs(r.allocs_floor),
            if checked == 0 {
                "–".to_string()
            } else if misses.is_empty() {
                "met".to_string()
            } else {
                format!("missed: {}", marked.join(", "))
            },
        );
    }
    let _ = writeln!(
        out,
        "\nTimes are medians per iteration, or per element (input, level, observer, call) where the case says so. Allocations are per iteration or element too (futures/tokio: the closest code; `–`: not counted). † marks a target the floor misses too: out of reach of any code that does the case's least work; ‡ marks a 2x-floor target the closest futures/tokio code misses too."
    );
    if opts.all {
        let _ = writeln!(
            out,
            "\nEvery other variant:\n\n| case | variant | role | time |\n|---|---|---|---|"
        );
        for (row, r) in rows.iter().zip(&results) {
            for (name, role, m) in &r.others {
                let _ = writeln!(
                    out,
                    "| {} | `{name}` | {role:?} | {} |",
                    row.key,
                    fmt_ns(m.ns() / row.elements as f64)
                );
            }
        }
    }
    let _ = writeln!(out, "\nWhat each case compares against:\n");
    let mut notes_seen: Vec<(&str, Vec<&str>)> = Vec::new();
    for row in rows.iter().filter(|r| !r.notes.is_empty()) {
        match notes_seen.iter_mut().find(|(n, _)| *n == row.notes) {
            Some((_, keys)) => keys.push(&row.key),
            None => notes_seen.push((row.notes, vec![&row.key])),
        }
    }
    for (note, keys) in notes_seen {
        let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        let _ = writeln!(out, "- {}: {note}", keys.join(", "));
    }
    for n in &notes {
        let _ = writeln!(out, "\nNote: {n}");
    }
    if opts.alloc {
        match benches::alloc_profile() {
            Some(lines) => {
                let _ = writeln!(
                    out,
                    "\nAllocations per operation (counting allocator):\n\n| operation | allocations | bytes |\n|---|---|---|"
                );
                for l in lines {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.0} |",
                        l.what,
                        fmt_allocs(Some(l.allocs)),
                        l.bytes
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "\nNote: the counting allocator is not installed; no allocation profile."
                );
            }
        }
    }
    if !misses_listed.is_empty() {
        let _ = writeln!(out, "\nMissed: {}.", misses_listed.join("; "));
    }
    let _ = writeln!(
        out,
        "\n(total run time {:.0} s)\n",
        started.elapsed().as_secs_f64()
    );
    let mut tally: Vec<(&&str, &usize)> = missed.iter().collect();
    tally.sort();
    let total_misses: usize = missed.values().sum();
    let _ = writeln!(
        out,
        "Verdict: {met_all} of {} cases meet every target{}.",
        rows.len(),
        if tally.is_empty() {
            String::new()
        } else {
            format!(
                "; misses: {} (of the {total_misses} misses, {beyond_floor_count} are missed by the floor too, †, and {futures_miss_too_count} by the closest futures/tokio code too, ‡)",
                tally
                    .iter()
                    .map(|(t, n)| format!("{t} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    print!("{out}");
}

fn short_n(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
