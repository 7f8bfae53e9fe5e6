//! Runs one case of the suite in a loop, for profiling with callgrind or
//! perf: `prof_case ROW [CASE] [ITERS]`, for example
//! `valgrind --tool=callgrind target/release/examples/prof_case chain_fires_at_end deferred 100000`.
//! `prof_case --list` prints every row and case.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(key) = args.next() else {
        eprintln!("usage: prof_case ROW [CASE] [ITERS] | --list");
        std::process::exit(2);
    };
    let rows = benches::rows();
    if key == "--list" {
        for row in &rows {
            let cases: Vec<&str> = row.cases.iter().map(|c| c.name).collect();
            println!("{}: {}", row.key, cases.join(", "));
        }
        return;
    }
    let case_name = args.next().unwrap_or_else(|| "deferred".into());
    let iters: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let row = rows
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no row {key} (try --list)"));
    let case = row
        .cases
        .iter()
        .find(|c| c.name == case_name)
        .unwrap_or_else(|| panic!("no case {case_name} in {key} (try --list)"));
    let t = (case.run)(iters);
    eprintln!(
        "{key} {case_name}: {iters} iterations, {:.1} ns each",
        t.as_secs_f64() * 1e9 / iters as f64
    );
}
