//! Every case of every light row runs (its assertions included): a smoke
//! test of the suite, so that a change in the core that breaks a benchmark
//! shows up in `cargo test`.

#[test]
fn every_light_case_runs() {
    let rows = benches::rows();
    assert!(rows.len() > 20);
    for row in rows.iter().filter(|r| !r.heavy) {
        assert!(
            row.cases.iter().any(|c| c.role == benches::Role::Ours),
            "{} has our case",
            row.key
        );
        for case in &row.cases {
            (case.run)(1);
        }
    }
}

#[test]
fn row_keys_are_unique_and_match_the_python_script() {
    let rows = benches::rows();
    let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), rows.len());
    let script = include_str!("../python/twisted_cases.py");
    for key in [
        "await_fired_1000",
        "await_unfired_20",
        "chain_fires_at_start",
        "chain_fires_at_end",
        "errback_chain",
        "chained_already_fired",
        "chained_not_fired",
    ] {
        assert!(keys.contains(&key), "{key} is a row");
        assert!(
            script.contains(&format!("\"{key}\"")),
            "{key} is a Python case"
        );
    }
}
