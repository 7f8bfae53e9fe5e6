//! The scenario runner's pictures (`integration_tests::scenario::trace_diagram`):
//! recording a run never changes its trace; the Mermaid text and the SVG of
//! a shared case are well-formed and show its lanes, its cancels going down
//! and its failures coming up; `deferred-scenario --mermaid/--svg` writes
//! them without changing stdout or the exit code; and the guide's pictures
//! (`compat/src/guide/*.svg`) are what their scenarios produce now (each
//! scenario's trace being the one real Twisted and Synapse printed, stored
//! beside it as `.expected`).
//!
//! `UPDATE_GUIDE_PICTURES=1 cargo test -p integration-tests --test
//! trace_diagram` rewrites the guide's pictures.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::scenario::trace_diagram::{Arrow, Diagram, Row, diagram_text};
use integration_tests::scenario::{Error, RunError, run_text};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scenarios(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    files.sort();
    files
}

/// Every scenario of the golden corpus, the shared cases and the guide.
fn corpus() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root().join("tests/golden")) {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            files.extend(scenarios(&dir));
        }
    }
    files.extend(scenarios(&root().join("../shared/conformance/cases")));
    files.extend(scenarios(&root().join("compat/src/guide")));
    files
}

/// A tiny XML well-formedness check: every tag closes in order, attribute
/// values are quoted, entities are the five XML ones (or numeric). Returns
/// the element names in document order.
fn check_xml(text: &str) -> Result<Vec<String>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = text;
    let check_text = |t: &str| -> Result<(), String> {
        let mut t = t;
        while let Some(i) = t.find('&') {
            let end = t[i..].find(';').ok_or_else(|| format!("bare & in {t:?}"))?;
            let entity = &t[i + 1..i + end];
            let known = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
                || (entity.starts_with('#') && entity[1..].chars().all(|c| c.is_ascii_digit()));
            if !known {
                return Err(format!("unknown entity &{entity};"));
            }
            t = &t[i + end + 1..];
        }
        if t.contains('>') {
            return Err(format!("bare > in text {t:?}"));
        }
        Ok(())
    };
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open])?;
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("bad element name {name:?}"));
        }
        // attr="value" pairs.
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                break;
            }
            let eq = attrs
                .find('=')
                .ok_or_else(|| format!("attribute without value in <{name}>"))?;
            let key = &attrs[..eq];
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {key:?} in <{name}>"));
            }
            let value = &attrs[eq + 1..];
            let value = value
                .strip_prefix('"')
                .ok_or_else(|| format!("unquoted attribute {key} in <{name}>"))?;
            let end = value.find('"').ok_or("unterminated attribute")?;
            check_text(&value[..end])?;
            if value[..end].contains('<') {
                return Err(format!("< in attribute {key}"));
            }
            attrs = &value[end + 1..];
        }
        names.push(name.to_owned());
        if !self_closing {
            stack.push(name.to_owned());
        }
    }
    check_text(rest)?;
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    Ok(names)
}

/// Checks Mermaid text line by line: a `sequenceDiagram` header, then
/// participants, then messages and notes between declared participants.
fn check_mermaid(text: &str) -> Result<(), String> {
    let mut lines = text.lines();
    if lines.next() != Some("sequenceDiagram") {
        return Err("no sequenceDiagram header".into());
    }
    let mut participants: Vec<String> = Vec::new();
    let arrows = ["-->>", "--x", "->>", "-x"];
    for line in lines {
        let line = line
            .strip_prefix("    ")
            .ok_or_else(|| format!("unindented line {line:?}"))?;
        if line.starts_with("title ") {
            continue;
        }
        if let Some(p) = line.strip_prefix("participant ") {
            let id = p.split(" as ").next().unwrap_or(p);
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad participant id {id:?}"));
            }
            participants.push(id.to_owned());
            continue;
        }
        if line.contains(';') || line.contains('<') || line.contains('>') && !line.contains(">>") {
            return Err(format!("unescaped character in {line:?}"));
        }
        if let Some(note) = line.strip_prefix("Note over ") {
            let (id, _) = note.split_once(": ").ok_or("note without text")?;
            if !participants.iter().any(|p| p == id) {
                return Err(format!("note over undeclared {id:?}"));
            }
            continue;
        }
        let (head, _label) = line
            .split_once(": ")
            .ok_or_else(|| format!("message without label {line:?}"))?;
        let (from, to) = arrows
            .iter()
            .find_map(|a| head.split_once(a))
            .ok_or_else(|| format!("no arrow in {line:?}"))?;
        for id in [from, to] {
            if !participants.iter().any(|p| p == id) {
                return Err(format!("message between undeclared {id:?}"));
            }
        }
    }
    Ok(())
}

fn messages(d: &Diagram, arrow: Arrow) -> Vec<(String, String, String)> {
    d.rows
        .iter()
        .filter_map(|row| match row {
            Row::Message {
                from,
                to,
                arrow: a,
                label,
            } if *a == arrow => Some((
                d.lanes[*from].label.clone(),
                d.lanes[*to].label.clone(),
                label.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn lane_position(d: &Diagram, label: &str) -> usize {
    d.lanes
        .iter()
        .position(|l| l.label == label)
        .unwrap_or_else(|| panic!("no lane {label:?} in {:?}", d.lanes))
}

#[test]
fn recording_never_changes_the_trace_and_every_picture_is_well_formed() {
    let mut checked = 0;
    for path in corpus() {
        let text = std::fs::read_to_string(&path).unwrap();
        let plain = run_text(&text);
        let drawn = diagram_text(&text);
        match (plain, drawn) {
            (Ok(trace), Ok((recorded, diagram))) => {
                assert_eq!(
                    trace,
                    recorded,
                    "{}: recording changed the trace",
                    path.display()
                );
                check_mermaid(&diagram.mermaid())
                    .unwrap_or_else(|e| panic!("{}: Mermaid: {e}", path.display()));
                check_xml(&diagram.svg("x"))
                    .unwrap_or_else(|e| panic!("{}: SVG: {e}", path.display()));
                checked += 1;
            }
            (Err(Error::Run(RunError::Unsupported { .. })), Err(_)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "{}", path.display()),
            (a, b) => panic!("{}: {a:?} but recorded {b:?}", path.display()),
        }
    }
    assert!(checked >= 300, "only {checked} scenarios checked");
}

#[test]
fn shared_case_cancel_of_a_chained_deferred() {
    // ../shared/conformance/cases/cancel_waiting_on_chained.scenario: a
    // waits on b; cancelling a cancels b, whose CancelledError comes back.
    let path = root().join("../shared/conformance/cases/cancel_waiting_on_chained.scenario");
    let text = std::fs::read_to_string(path).unwrap();
    let (_, d) = diagram_text(&text).unwrap();
    let labels: Vec<&str> = d.lanes.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["caller", "a", "b"]);
    assert_eq!(
        messages(&d, Arrow::Cancel),
        [
            ("caller".into(), "a".into(), "cancel()".into()),
            ("a".into(), "b".into(), "cancel()".into()),
        ]
    );
    assert!(
        messages(&d, Arrow::Failure).contains(&(
            "b".into(),
            "a".into(),
            "F(CancelledError)".into()
        )),
        "{:#?}",
        d.rows
    );
    let mermaid = d.mermaid();
    check_mermaid(&mermaid).unwrap();
    assert!(mermaid.contains("    caller-xd_a: cancel()\n"));
    assert!(mermaid.contains("    d_a-xd_b: cancel()\n"));
    assert!(mermaid.contains("    Note over d_b: canceller runs\n"));
    assert!(mermaid.contains("    d_b--xd_a: F(CancelledError)\n"));

    let svg = d.svg("chained");
    let names = check_xml(&svg).unwrap();
    assert_eq!(names.first().map(String::as_str), Some("svg"));
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!svg.contains("\n\n"), "no blank line (inlined in Markdown)");
    for lane in ["caller", "d_a", "d_b"] {
        assert!(svg.contains(&format!("data-lane=\"{lane}\"")), "{lane}");
    }
    assert_eq!(svg.matches("class=\"msg cancel\"").count(), 2);
    assert!(svg.matches("class=\"msg failure\"").count() >= 1);
    assert!(svg.contains("url(#chained-cancel)"));
}

#[test]
fn cancel_goes_right_and_failures_come_left() {
    // The guide's first picture: lanes are ordered so that a cancel goes
    // down (left to right) and the CancelledError up (right to left).
    let text =
        std::fs::read_to_string(root().join("compat/src/guide/cancel_flow.scenario")).unwrap();
    let (_, d) = diagram_text(&text).unwrap();
    for row in &d.rows {
        if let Row::Message {
            from, to, arrow, ..
        } = *row
            && from != to
        {
            match arrow {
                Arrow::Cancel => assert!(from < to, "{row:?}"),
                Arrow::Failure | Arrow::Value => assert!(from > to, "{row:?}"),
                Arrow::Call => {}
            }
        }
    }
    assert!(lane_position(&d, "request: on_get()") < lane_position(&d, "d"));
    assert_eq!(
        d.title.as_deref(),
        Some("Mechanics: cancel() goes down, CancelledError comes up")
    );
}

#[test]
fn shared_deferred_picture_shows_the_wrong_waiter_failing() {
    let text =
        std::fs::read_to_string(root().join("compat/src/guide/shared_deferred.scenario")).unwrap();
    let (_, d) = diagram_text(&text).unwrap();
    assert!(messages(&d, Arrow::Cancel).contains(&(
        "r2: wait_for_room()".into(),
        "room".into(),
        "cancel()".into()
    )));
    // The CancelledError goes to r1, which was not cancelled; r2 gets None.
    assert!(messages(&d, Arrow::Failure).contains(&(
        "room".into(),
        "r1: wait_for_room()".into(),
        "F(CancelledError)".into()
    )));
    assert!(messages(&d, Arrow::Value).contains(&(
        "room".into(),
        "r2: wait_for_room()".into(),
        "none".into()
    )));
}

#[test]
fn the_runner_writes_mermaid_and_svg_without_changing_its_output() {
    let runner = env!("CARGO_BIN_EXE_deferred-scenario");
    let scenario = root().join("../shared/conformance/cases/coroutine_cancel_started.scenario");
    let out_dir = std::env::temp_dir().join(format!("trace-diagram-test-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let (mmd, svg) = (out_dir.join("out.mmd"), out_dir.join("out.svg"));
    let plain = Command::new(runner).arg(&scenario).output().unwrap();
    let drawn = Command::new(runner)
        .arg("--mermaid")
        .arg(&mmd)
        .arg("--svg")
        .arg(&svg)
        .arg(&scenario)
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(0));
    assert_eq!(drawn.status.code(), Some(0));
    assert_eq!(plain.stdout, drawn.stdout);
    let expected = std::fs::read_to_string(scenario.with_extension("expected")).unwrap();
    assert_eq!(String::from_utf8(drawn.stdout).unwrap(), expected);
    let mermaid = std::fs::read_to_string(&mmd).unwrap();
    check_mermaid(&mermaid).unwrap();
    assert!(mermaid.contains("caller-xd_r: cancel()"));
    assert!(mermaid.contains("d_r-xd_x: cancel()"));
    assert!(mermaid.contains("d_x--xd_r: F(CancelledError)"));
    check_xml(&std::fs::read_to_string(&svg).unwrap()).unwrap();

    // A malformed scenario: the same exit code, nothing written.
    let bad = out_dir.join("bad.scenario");
    std::fs::write(&bad, "frobnicate x\n").unwrap();
    let (mmd2, svg2) = (out_dir.join("bad.mmd"), out_dir.join("bad.svg"));
    let plain = Command::new(runner).arg(&bad).output().unwrap();
    let drawn = Command::new(runner)
        .arg("--mermaid")
        .arg(&mmd2)
        .arg("--svg")
        .arg(&svg2)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(2));
    assert_eq!(drawn.status.code(), Some(2));
    assert!(drawn.stdout.is_empty());
    assert!(!mmd2.exists() && !svg2.exists());

    // The pictures take one scenario at a time.
    let two = Command::new(runner)
        .arg("--svg")
        .arg(&svg2)
        .arg(&scenario)
        .arg(&scenario)
        .output()
        .unwrap();
    assert_eq!(two.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn the_guide_pictures_are_up_to_date() {
    let dir = root().join("compat/src/guide");
    let update = std::env::var_os("UPDATE_GUIDE_PICTURES").is_some();
    let mut stale = Vec::new();
    let files = scenarios(&dir);
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let (trace, d) = diagram_text(&text).unwrap();
        // Each picture's run is the one real Twisted and Synapse make.
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        assert_eq!(trace, expected, "{}", path.display());
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let svg = d.svg(stem);
        check_xml(&svg).unwrap();
        let target = path.with_extension("svg");
        if update {
            std::fs::write(&target, &svg).unwrap();
        } else if std::fs::read_to_string(&target).ok().as_deref() != Some(svg.as_str()) {
            stale.push(target.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale pictures (UPDATE_GUIDE_PICTURES=1 cargo test -p integration-tests --test trace_diagram): {stale:?}"
    );
}
