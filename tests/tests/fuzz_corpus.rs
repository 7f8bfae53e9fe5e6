//! The fuzz targets' seed corpora and the inputs the fuzzers found
//! (`tests/fuzz/corpus/`, `tests/fuzz/regressions/`), replayed through the
//! targets' bodies on stable Rust, plus a few thousand pseudo-random inputs
//! of each (see `integration_tests::fuzzing` and the README's
//! "Reliability").

use std::path::{Path, PathBuf};

use integration_tests::fuzzing::{deferred_ops, http, scenario};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file under `tests/fuzz/{corpus,regressions}/TARGET/`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A small deterministic generator (xorshift), so the random inputs are the
/// same on every run.
fn random_inputs(n: usize, max_len: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(move |_| {
        let len = (next() as usize) % max_len;
        (0..len).map(|_| next() as u8).collect()
    })
}

/// Runs one input; on a failure, prints it (bytes and ops) before failing.
fn run_ops_reporting(data: &[u8], origin: &str) -> deferred_ops::Stats {
    match std::panic::catch_unwind(|| deferred_ops::run(data)) {
        Ok(stats) => stats,
        Err(panic) => {
            eprintln!(
                "deferred_ops input {origin} failed: {data:?}\nops: {:?}",
                deferred_ops::decode(data)
            );
            std::panic::resume_unwind(panic)
        }
    }
}

#[test]
fn deferred_ops_corpus_replays_cleanly() {
    deferred_ops::install_panic_filter();
    let files = inputs("deferred_ops");
    assert!(files.len() >= 10, "seed corpus missing: {files:?}");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let stats = run_ops_reporting(&data, &f.display().to_string());
        assert!(stats.ran <= stats.callbacks, "{}: {stats:?}", f.display());
    }
}

#[test]
fn deferred_ops_random_inputs_run_cleanly() {
    deferred_ops::install_panic_filter();
    for (i, data) in random_inputs(3000, 200, 0x0005_eed0_f0b5).enumerate() {
        run_ops_reporting(&data, &format!("random #{i}"));
    }
}

#[test]
fn deferred_ops_decoding_round_trips() {
    for data in random_inputs(2000, 300, 0xdec0de) {
        let ops = deferred_ops::decode(&data);
        assert_eq!(deferred_ops::decode(&deferred_ops::encode(&ops)), ops);
    }
}

#[test]
fn scenario_corpus_replays_cleanly() {
    let files = inputs("scenario");
    assert!(files.len() >= 5, "seed corpus missing: {files:?}");
    for f in files {
        scenario::check(&std::fs::read(&f).unwrap());
    }
}

#[test]
fn scenario_random_inputs_are_rejected_cleanly() {
    // Random bytes are almost never a scenario; mutate golden text instead.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/core");
    let mut texts: Vec<Vec<u8>> = std::fs::read_dir(golden)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    texts.sort();
    for (i, noise) in random_inputs(600, 8, 0xfeed).enumerate() {
        let mut text = texts[i % texts.len()].clone();
        if text.is_empty() {
            continue;
        }
        for (j, b) in noise.iter().enumerate() {
            let at = (usize::from(*b) * 31 + j * 7919 + i) % text.len();
            match b % 3 {
                0 => text[at] = b' ',
                1 => text.insert(at, b"x:1\n#"[usize::from(*b) % 5]),
                _ => {
                    text.remove(at);
                }
            }
            if text.is_empty() {
                break;
            }
        }
        scenario::check(&text);
    }
}

/// Writes the hand-made seeds of `tests/fuzz/corpus/deferred_ops/` (run
/// with `--ignored` after changing the op encoding or adding a seed).
#[test]
#[ignore = "writes the seed corpus"]
fn write_deferred_ops_seeds() {
    use deferred_ops::{Body, CoStep, Effect, Err, Half, Op, Ref, Res, Val};
    let (a0, a1, a2, a3) = (Ref::Any(0), Ref::Any(1), Ref::Any(2), Ref::Any(3));
    let (t0, t1) = (Ref::Typed(0), Ref::Typed(1));
    let body = |res: Res| Body {
        res,
        effects: vec![],
    };
    let with = |res: Res, effects: Vec<Effect>| Body { res, effects };
    let seeds: Vec<(&str, Vec<Op>)> = vec![
        // B10, B11, B60: callbacks in order, once; a second fire fails.
        (
            "fire_twice",
            vec![
                Op::New(a0, None),
                Op::Add(a0, Half::Callback, body(Res::Add(1))),
                Op::Add(a0, Half::Both, body(Res::Pass)),
                Op::Fire(a0, Val::Int(2)),
                Op::Fire(a0, Val::Int(3)),
                Op::Errback(a0, Err::User),
                Op::Add(a0, Half::Errback, body(Res::Value(Val::Token))),
            ],
        ),
        // B48, B49, B50: a cancel without canceller swallows one fire.
        (
            "cancel_swallows_one_fire",
            vec![
                Op::New(a0, None),
                Op::Add(a0, Half::Errback, body(Res::Trap(Val::Int(-1)))),
                Op::Cancel(a0),
                Op::Cancel(a0),
                Op::Fire(a0, Val::Token),
                Op::Fire(a0, Val::Token),
            ],
        ),
        // B51, B52, B53: cancellers that fire, raise, panic.
        (
            "cancellers",
            vec![
                Op::New(
                    a0,
                    Some(with(Res::Pass, vec![Effect::Fire(a0, Val::Int(7))])),
                ),
                Op::New(a1, Some(body(Res::Fail(Err::User)))),
                Op::New(a2, Some(body(Res::Panic))),
                Op::Cancel(a0),
                Op::Cancel(a1),
                Op::Cancel(a2),
                Op::Fire(a1, Val::None),
                Op::Fire(a2, Val::None),
            ],
        ),
        // B30, B31, B55: chaining, and a cancel forwarded to the inner one.
        (
            "chaining_and_cancel_forwarding",
            vec![
                Op::New(a0, None),
                Op::New(a1, Some(body(Res::Pass))),
                Op::Add(a0, Half::Callback, body(Res::Return(a1))),
                Op::Add(a0, Half::Both, body(Res::Trap(Val::Token))),
                Op::Fire(a0, Val::Token),
                Op::Add(a1, Half::Callback, body(Res::Add(1))),
                Op::Cancel(a0),
                Op::Fire(a1, Val::Int(5)),
            ],
        ),
        // B41: a callback returning its own Deferred.
        (
            "self_return",
            vec![
                Op::New(a0, None),
                Op::Add(a0, Half::Callback, body(Res::Return(a0))),
                Op::Add(a0, Half::Callback, body(Res::Value(Val::Token))),
                Op::Fire(a0, Val::None),
                Op::Cancel(a0),
            ],
        ),
        // B43-B45: pauses nest; an unbalanced unpause wedges.
        (
            "pause_unpause",
            vec![
                Op::New(a0, None),
                Op::Pause(a0),
                Op::Pause(a0),
                Op::Add(a0, Half::Callback, body(Res::Value(Val::Int(1)))),
                Op::Fire(a0, Val::None),
                Op::Unpause(a0),
                Op::Unpause(a0),
                Op::Unpause(a0),
                Op::Add(a0, Half::Callback, body(Res::Pass)),
                Op::Pause(a0),
                Op::Add(a0, Half::Callback, body(Res::Pass)),
            ],
        ),
        // B38, B57: chain_deferred, and cancelling its target.
        (
            "chain_deferred",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::Chain(a0, a1),
                Op::Add(a1, Half::Both, body(Res::Pass)),
                Op::Cancel(a1),
                Op::Fire(a0, Val::Token),
                Op::Fire(a1, Val::Token),
            ],
        ),
        // B40: a user-paused outer stops the walk; the inner's later links
        // wait for the next trigger.
        (
            "paused_outer_stops_the_walk",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::Add(a0, Half::Callback, body(Res::Return(a1))),
                Op::Fire(a0, Val::None),
                Op::Pause(a0),
                Op::Add(a1, Half::Callback, body(Res::Value(Val::Token))),
                Op::Fire(a1, Val::Int(1)),
                Op::Unpause(a0),
            ],
        ),
        // B88-B90: gather, a failure, consume errors, cancel.
        (
            "gather",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::Gather(a2, vec![a0, a1], true),
                Op::Add(a2, Half::Both, body(Res::Pass)),
                Op::Errback(a1, Err::User),
                Op::Fire(a0, Val::Token),
                Op::Gather(a3, vec![], false),
            ],
        ),
        // B76-B85: DeferredList with each flag, cancelled.
        (
            "deferred_list",
            vec![
                Op::New(a0, None),
                Op::New(a1, Some(body(Res::Pass))),
                Op::DList(a2, vec![a0, a1], 0b011),
                Op::DList(a3, vec![a0, a1, a0], 0b100),
                Op::Cancel(a2),
                Op::Fire(a0, Val::Int(1)),
                Op::Cancel(a3),
            ],
        ),
        // B94-B97: race, the losers cancelled.
        (
            "race",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::New(a2, Some(body(Res::Pass))),
                Op::Race(a3, vec![a0, a1, a2]),
                Op::Add(a3, Half::Both, body(Res::Pass)),
                Op::Fire(a1, Val::Token),
                Op::Fire(a0, Val::Token),
                Op::Race(Ref::Any(4), vec![]),
                Op::Cancel(Ref::Any(4)),
            ],
        ),
        // B102-B109: a coroutine awaiting, cancelled, catching.
        (
            "coroutine_cancel",
            vec![
                Op::New(a0, None),
                Op::Coroutine(
                    a1,
                    vec![
                        CoStep::Await(a0, true),
                        CoStep::Await(a2, false),
                        CoStep::Return(Val::Int(3)),
                    ],
                ),
                Op::New(a2, None),
                Op::Cancel(a1),
                Op::Fire(a0, Val::Token),
                Op::Add(a1, Half::Both, body(Res::Pass)),
                Op::Cancel(a1),
            ],
        ),
        // A coroutine that raises, panics, fires its own awaited Deferred.
        (
            "coroutine_effects",
            vec![
                Op::New(a0, None),
                Op::Coroutine(
                    a1,
                    vec![
                        CoStep::Effect(Effect::Fire(a0, Val::Int(1))),
                        CoStep::Await(a0, false),
                        CoStep::Raise(Err::User),
                    ],
                ),
                Op::Coroutine(a2, vec![CoStep::Panic]),
                Op::Coroutine(
                    t0,
                    vec![CoStep::Await(a1, true), CoStep::Return(Val::Int(4))],
                ),
            ],
        ),
        // Typed handles: arithmetic, overflow, chaining, re-typing.
        (
            "typed",
            vec![
                Op::New(t0, None),
                Op::New(t1, None),
                Op::Add(t0, Half::Callback, body(Res::Add(1))),
                Op::Add(t0, Half::Callback, body(Res::Return(t1))),
                Op::Fire(t0, Val::Int(41)),
                Op::Copy(t0, a0),
                Op::Add(a0, Half::Callback, body(Res::Add(i64::MAX))),
                Op::Fire(t1, Val::Int(i64::MAX)),
                Op::Gather(Ref::Typed(2), vec![t0, t1], false),
                Op::Copy(a0, Ref::Typed(3)),
            ],
        ),
        // B14: panics in callbacks, errbacks and add_callbacks halves.
        (
            "panics",
            vec![
                Op::New(a0, None),
                Op::Add(a0, Half::Callback, body(Res::Panic)),
                Op::AddCallbacks(a0, body(Res::Panic), body(Res::Panic)),
                Op::Add(a0, Half::Errback, body(Res::Value(Val::Opaque))),
                Op::Fire(a0, Val::Token),
                Op::Passthrough(a0),
            ],
        ),
        // B21-B27: re-entrant bodies.
        (
            "reentrancy",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::Add(
                    a0,
                    Half::Callback,
                    with(
                        Res::Pass,
                        vec![
                            Effect::AddLeaf(a0, Half::Both, Res::Value(Val::Int(9))),
                            Effect::Fire(a0, Val::Token),
                            Effect::Fire(a1, Val::Token),
                        ],
                    ),
                ),
                Op::Add(
                    a1,
                    Half::Callback,
                    with(
                        Res::Pass,
                        vec![
                            Effect::AddLeaf(a0, Half::Callback, Res::Pass),
                            Effect::Cancel(a0),
                            Effect::Pause(a1),
                        ],
                    ),
                ),
                Op::Fire(a0, Val::None),
            ],
        ),
        // The collector: waiting Deferreds dropped mid-way.
        (
            "dropped_waiters",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::Add(a0, Half::Callback, body(Res::Return(a1))),
                Op::Fail(a2, Err::User),
                Op::Chain(a2, a1),
                Op::Fire(a0, Val::None),
                Op::Drop(a0),
                Op::Drop(a1),
                Op::Drop(a2),
            ],
        ),
        // B4, B5: a Failure or a Deferred given to callback().
        (
            "odd_values",
            vec![
                Op::New(a0, None),
                Op::New(a1, None),
                Op::Fire(a0, Val::Failure(Err::Cancelled)),
                Op::Fire(a1, Val::Deferred(a0)),
                Op::Add(a1, Half::Callback, body(Res::Pass)),
                Op::Succeed(a2, Val::Opaque),
                Op::Coroutine(a3, vec![CoStep::Await(a2, false), CoStep::Await(a2, false)]),
            ],
        ),
    ];
    let dir = fuzz_dir().join("corpus/deferred_ops");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, ops) in seeds {
        let bytes = deferred_ops::encode(&ops);
        assert_eq!(
            deferred_ops::decode(&bytes),
            ops,
            "{name} does not round-trip"
        );
        deferred_ops::install_panic_filter();
        deferred_ops::run(&bytes);
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Runs one HTTP input; on a failure, prints it (decoded) before failing.
fn run_http_reporting(data: &[u8], origin: &str) -> http::Report {
    match std::panic::catch_unwind(|| http::check(data)) {
        Ok(report) => report,
        Err(panic) => {
            let input = http::decode(data);
            eprintln!(
                "http input {origin} failed: {data:?}\n{:?}, tick {}, splits {:?}, payload {:?}",
                input.disconnect,
                input.tick,
                input.splits,
                String::from_utf8_lossy(&input.payload)
            );
            std::panic::resume_unwind(panic)
        }
    }
}

#[test]
fn http_corpus_replays_cleanly() {
    let files = inputs("http");
    assert!(files.len() >= 15, "seed corpus missing: {files:?}");
    let mut codes = std::collections::BTreeSet::new();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let report = run_http_reporting(&data, &f.display().to_string());
        codes.extend(report.codes);
        codes.extend(report.unanswered);
    }
    // The seeds reach every kind of answer.
    for code in [200, 400, 404, 405, 413, 499] {
        assert!(codes.contains(&code), "no seed gets {code}: {codes:?}");
    }
}

/// Tokens the mutations of the HTTP seeds insert.
const HTTP_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"\r\n\r\n",
    b"GET ",
    b"HEAD ",
    b"POST ",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"/ping",
    b"/echo",
    b"/sleep/2",
    b"/rooms/!r/messages",
    b"?from=x",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Expect: 100-continue",
    b"0\r\n\r\n",
    b"5\r\nabcde\r\n",
    b"999",
    b"{}",
    b"%2F",
];

#[test]
fn http_random_inputs_run_cleanly() {
    let mut seeds: Vec<Vec<u8>> = inputs("http")
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .filter(|s| !s.is_empty())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "seed corpus missing");
    for (i, noise) in random_inputs(3000, 12, 0x0bad_c0de_4477).enumerate() {
        let mut data = seeds[i % seeds.len()].clone();
        for (j, b) in noise.iter().enumerate() {
            let at = (usize::from(*b) * 131 + j * 7919 + i * 31) % (data.len() + 1);
            match b % 5 {
                // The header: when to disconnect, the clock, the chunks.
                0 => data[0] = b.wrapping_mul(37),
                1 => {
                    let token = HTTP_TOKENS[(usize::from(*b) + i) % HTTP_TOKENS.len()];
                    data.splice(at..at, token.iter().copied());
                }
                2 if at < data.len() => {
                    let end = (at + usize::from(b % 8) + 1).min(data.len());
                    data.drain(at..end);
                }
                3 if at < data.len() => data[at] = b.rotate_left(3),
                _ => {
                    let end = (at + usize::from(b % 16)).min(data.len());
                    let copy = data[at..end].to_vec();
                    data.splice(at..at, copy);
                }
            }
            if data.is_empty() {
                data.push(0);
            }
        }
        run_http_reporting(&data, &format!("random #{i}"));
    }
}

/// Writes the hand-made seeds of `tests/fuzz/corpus/http/` (run with
/// `--ignored` after changing the input encoding or adding a seed).
#[test]
#[ignore = "writes the seed corpus"]
fn write_http_seeds() {
    use http::{Disconnect, Input};
    let plain = |payload: &[u8]| Input {
        disconnect: Disconnect::Never,
        tick: false,
        splits: vec![],
        payload: payload.to_vec(),
    };
    let with = |disconnect, tick, splits: &[u8], payload: &[u8]| Input {
        disconnect,
        tick,
        splits: splits.to_vec(),
        payload: payload.to_vec(),
    };
    let big_header = format!("GET /ping HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1100));
    let many_headers = format!(
        "GET /ping HTTP/1.1\r\n{}\r\n",
        (0..20)
            .map(|n| format!("X-{n}: {n}\r\n"))
            .collect::<String>()
    );
    let pings_behind_a_sleep = format!(
        "GET /sleep/1 HTTP/1.1\r\n\r\n{}",
        "GET /ping HTTP/1.1\r\n\r\n".repeat(15)
    );
    // A JSON object of exactly the body limit, 512 bytes.
    let at_the_limit = format!("{{\"a\":\"{}\"}}", "x".repeat(504));
    assert_eq!(at_the_limit.len(), 512);
    let body_at_the_limit = format!(
        "POST /echo HTTP/1.1\r\nContent-Length: 512\r\n\r\n{at_the_limit}GET /ping HTTP/1.1\r\n\r\n"
    );
    let chunk_at_the_limit = format!(
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n{at_the_limit}\r\n0\r\n\r\n"
    );
    let chunks_over_the_limit = format!(
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{}\r\n101\r\n",
        " ".repeat(256)
    );
    let seeds: Vec<(&str, Input)> = vec![
        ("body_at_the_limit", plain(body_at_the_limit.as_bytes())),
        ("chunk_at_the_limit", plain(chunk_at_the_limit.as_bytes())),
        ("chunks_over_the_limit", plain(chunks_over_the_limit.as_bytes())),
        ("get_ping", plain(b"GET /ping HTTP/1.1\r\nHost: hs\r\n\r\n")),
        (
            "post_echo_json",
            plain(b"POST /echo HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2.5]}"),
        ),
        (
            "post_echo_not_json",
            plain(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}"),
        ),
        (
            "chunked_body_in_pieces",
            with(
                Disconnect::Never,
                false,
                &[3, 20, 1, 1, 30, 2, 5],
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n",
            ),
        ),
        (
            "pipelined_routes",
            plain(
                b"GET /ping HTTP/1.1\r\n\r\nHEAD /ping HTTP/1.1\r\n\r\nGET /rooms/!a%3Ahs/messages?from=t1 HTTP/1.1\r\n\r\nDELETE /ping HTTP/1.1\r\n\r\nGET /nowhere HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n",
            ),
        ),
        (
            "cancellable_sleep_client_leaves",
            with(Disconnect::MidHandler, false, &[], b"GET /sleep/3 HTTP/1.1\r\n\r\n"),
        ),
        (
            "uncancellable_handler_client_leaves",
            with(
                Disconnect::AfterSending,
                false,
                &[],
                b"GET /rooms/r/messages HTTP/1.1\r\n\r\n",
            ),
        ),
        (
            "pipelined_behind_a_sleep_pauses_reading",
            with(Disconnect::Never, true, &[30, 100], pings_behind_a_sleep.as_bytes()),
        ),
        (
            "http_1_0_then_ignored",
            plain(b"GET /ping HTTP/1.0\r\n\r\nGET /ping HTTP/1.1\r\n\r\n"),
        ),
        (
            "connection_close",
            plain(b"GET /sleep/1 HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\nGET /ping HTTP/1.1\r\n\r\n"),
        ),
        ("bad_request_line", plain(b"HELLO THERE\r\n\r\n")),
        ("bad_version", plain(b"GET /ping HTTP/2.0\r\n\r\n")),
        ("target_not_a_path", plain(b"OPTIONS * HTTP/1.1\r\n\r\n")),
        ("header_too_large", plain(big_header.as_bytes())),
        ("too_many_headers", plain(many_headers.as_bytes())),
        (
            "content_length_not_a_number",
            plain(b"POST /echo HTTP/1.1\r\nContent-Length: 1x\r\n\r\n{}"),
        ),
        (
            "content_length_twice",
            plain(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
        ),
        (
            "content_length_and_chunked",
            plain(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "body_too_large",
            plain(b"POST /echo HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{}"),
        ),
        (
            "chunk_too_large",
            plain(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"),
        ),
        ("malformed_chunk_size", plain(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")),
        ("bare_lf", plain(b"\nGET /ping HTTP/1.1\nHost: hs\n\nGET /ping HTTP/1.1\n\n")),
        (
            "expect_100_continue",
            with(
                Disconnect::Never,
                false,
                &[60],
                b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
            ),
        ),
        (
            "byte_at_a_time_then_leave",
            with(
                Disconnect::AfterFirstSend,
                false,
                &[1, 1, 1, 1, 1, 1, 1],
                b"GET /ping HTTP/1.1\r\n\r\n",
            ),
        ),
    ];
    let dir = fuzz_dir().join("corpus/http");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, input) in seeds {
        let bytes = http::encode(&input);
        assert_eq!(http::decode(&bytes), input, "{name} does not round-trip");
        run_http_reporting(&bytes, name);
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
