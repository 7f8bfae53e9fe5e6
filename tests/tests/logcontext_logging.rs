//! Log records carry the current logging context
//! (`twisted_compat::LoggingContextFilter`, Synapse's
//! `LoggingContextFilter`): the context's name as `request`, its server
//! name, and its request's attributes, added to each record's key-values.
//!
//! Synapse behaviours covered: the logging side of the logcontext document
//! ("a `logging.Filter` is then used to fish the information back out of the
//! thread-local variable and add it to each log record") and of Synapse's
//! `tests/logging/test_terse_json.py` (cited `TTJ::`).
//!
//! This binary installs one global logger: the filter around a logger that
//! keeps each thread's records. Each test runs on its own thread, starts in
//! the sentinel context and reads only its own thread's records.

use std::cell::RefCell;
use std::sync::Once;

use log::kv::{Key, Value, VisitSource};
use twisted_compat::{
    ContextRequest, LoggingContext, LoggingContextFilter, PreserveLoggingContext,
    SENTINEL_SERVER_NAME, capture_logcontext_errors, current_context, defer_to_thread,
    logcontext_error, nested_logging_context, run_as_background_process,
};
use twisted_deferred::{Failure, ensure_deferred};
use twisted_reactor::Reactor;

const HS: &str = "test.server";

/// One record as the wrapped logger received it.
#[derive(Debug, Clone, PartialEq)]
struct Logged {
    level: log::Level,
    target: String,
    message: String,
    /// Key-values in the order the record visits them; a null value is
    /// `None`.
    fields: Vec<(String, Option<String>)>,
}

impl Logged {
    fn get(&self, key: &str) -> Option<Option<&str>> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }

    fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn request(&self) -> &str {
        self.get("request").flatten().unwrap_or("<absent>")
    }
}

thread_local! {
    static RECORDS: RefCell<Vec<Logged>> = const { RefCell::new(Vec::new()) };
}

struct Fields(Vec<(String, Option<String>)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let text = value.to_borrowed_str().map(str::to_owned).or_else(|| {
            let shown = value.to_string();
            (shown != "None").then_some(shown)
        });
        self.0.push((key.as_str().to_owned(), text));
        Ok(())
    }
}

/// The handler: keeps every record, per thread.
struct Keep;

impl log::Log for Keep {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut fields = Fields(Vec::new());
        let _ = record.key_values().visit(&mut fields);
        let logged = Logged {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
            fields: fields.0,
        };
        let _ = RECORDS.try_with(|r| r.borrow_mut().push(logged));
    }

    fn flush(&self) {}
}

/// Installs `LoggingContextFilter(Keep)` once, then runs `f` and returns
/// what this thread logged meanwhile.
fn logged<R>(f: impl FnOnce() -> R) -> (R, Vec<Logged>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let filter: &'static LoggingContextFilter<Keep> =
            Box::leak(Box::new(LoggingContextFilter::wrap(Keep)));
        log::set_logger(filter).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    RECORDS.with(|r| r.borrow_mut().clear());
    let result = f();
    let records = RECORDS.with(|r| r.borrow_mut().split_off(0));
    (result, records)
}

// Synapse: TTJ::TerseJsonTestCase.test_with_context
#[test]
fn a_record_emitted_inside_a_context_shows_its_name_and_server_name() {
    let ((), records) = logged(|| {
        let _scope = LoggingContext::new("name", "test_server").entered();
        log::info!("Hello there, {}!", "wally");
    });
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.message, "Hello there, wally!");
    assert_eq!(r.level, log::Level::Info);
    assert_eq!(r.keys(), ["server_name", "request"]);
    assert_eq!(r.request(), "name");
    assert_eq!(r.get("server_name"), Some(Some("test_server")));
}

// Synapse: logcontext document ("the sentinel context"); LoggingContextFilter.filter (sentinel defaults)
#[test]
fn a_record_emitted_in_the_sentinel_shows_sentinel() {
    let ((), records) = logged(|| log::warn!("no context"));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request(), "sentinel");
    assert_eq!(
        records[0].get("server_name"),
        Some(Some(SENTINEL_SERVER_NAME))
    );
}

// Synapse: logcontext document ("logger.debug("phew")  # this will be logged against request_id")
#[test]
fn records_follow_the_context_current_when_each_is_emitted() {
    let ((), records) = logged(|| {
        log::info!("before");
        let outer = LoggingContext::new("GET-1", HS);
        let _scope = outer.entered();
        log::info!("in the request");
        {
            let _nested = nested_logging_context("db").entered();
            log::info!("in the nested context");
        }
        {
            let _preserve = PreserveLoggingContext::sentinel();
            log::info!("preserved");
        }
        log::info!("back");
    });
    let shown: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.message.as_str(), r.request()))
        .collect();
    assert_eq!(
        shown,
        [
            ("before", "sentinel"),
            ("in the request", "GET-1"),
            ("in the nested context", "GET-1-db"),
            ("preserved", "sentinel"),
            ("back", "GET-1"),
        ]
    );
}

// Synapse: TTJ::TerseJsonTestCase.test_with_request_context
#[test]
fn a_context_with_a_request_adds_its_attributes() {
    let request = ContextRequest {
        request_id: "POST-1".into(),
        ip_address: "127.0.0.1".into(),
        site_tag: "test-site".into(),
        requester: Some("@foo:test".into()),
        authenticated_entity: None,
        method: "POST".into(),
        url: "/_matrix/client/versions".into(),
        protocol: "1.1".into(),
        user_agent: String::new(),
    };
    let parent = LoggingContext::builder("POST-1", "test_server")
        .request(request)
        .build();
    let ((), records) = logged(|| {
        // The request comes from the parent context.
        let _scope = LoggingContext::builder("POST-1", "test_server")
            .parent_context(&parent)
            .build()
            .entered();
        log::info!("Hello there, {}!", "wally");
    });
    let r = &records[0];
    assert_eq!(
        r.keys(),
        [
            "server_name",
            "request",
            "ip_address",
            "site_tag",
            "requester",
            "authenticated_entity",
            "method",
            "url",
            "protocol",
            "user_agent",
        ]
    );
    assert_eq!(r.request(), "POST-1");
    assert_eq!(r.get("ip_address"), Some(Some("127.0.0.1")));
    assert_eq!(r.get("site_tag"), Some(Some("test-site")));
    assert_eq!(r.get("requester"), Some(Some("@foo:test")));
    assert_eq!(
        r.get("authenticated_entity"),
        Some(None),
        "None: a null value"
    );
    assert_eq!(r.get("method"), Some(Some("POST")));
    assert_eq!(r.get("url"), Some(Some("/_matrix/client/versions")));
    assert_eq!(r.get("protocol"), Some(Some("1.1")));
    assert_eq!(r.get("user_agent"), Some(Some("")));
}

// Synapse: LoggingContextFilter.filter (safe_set: in the sentinel a record's own attributes are kept)
#[test]
fn in_the_sentinel_a_records_own_values_are_kept() {
    let ((), records) = logged(|| {
        log::info!(server_name = "theirs", request = "their-request", extra = 3; "third party");
    });
    let r = &records[0];
    assert_eq!(r.get("server_name"), Some(Some("theirs")));
    assert_eq!(r.request(), "their-request");
    assert_eq!(r.get("extra"), Some(Some("3")));
    assert_eq!(
        r.keys(),
        ["server_name", "request", "extra"],
        "nothing added twice"
    );
    // Only the missing ones are filled in.
    let ((), records) = logged(|| log::info!(server_name = "theirs"; "half"));
    assert_eq!(records[0].get("server_name"), Some(Some("theirs")));
    assert_eq!(records[0].request(), "sentinel");
}

// Synapse: LoggingContextFilter.filter (within a Synapse context, its values replace the record's)
#[test]
fn within_a_context_its_values_replace_the_records() {
    let ((), records) = logged(|| {
        let _scope = LoggingContext::new("req", HS).entered();
        log::info!(server_name = "theirs", extra = "kept"; "mine");
    });
    let r = &records[0];
    assert_eq!(r.get("server_name"), Some(Some(HS)));
    assert_eq!(r.request(), "req");
    assert_eq!(r.get("extra"), Some(Some("kept")));
    assert_eq!(r.keys(), ["server_name", "request", "extra"]);
}

// Synapse: LoggingContextFilter (records keep their level, target and message)
#[test]
fn the_filter_changes_nothing_else_about_a_record() {
    let ((), records) = logged(|| {
        let _scope = LoggingContext::new("req", HS).entered();
        log::debug!(target: "synapse.handlers", "debugging {}", 42);
    });
    let r = &records[0];
    assert_eq!(
        (r.level, r.target.as_str(), r.message.as_str()),
        (log::Level::Debug, "synapse.handlers", "debugging 42")
    );
}

// Synapse: semantics 2.8 #89 (logcontext_error logs a warning by default), in the context current then
#[test]
fn a_misuse_warning_shows_the_context_current_when_it_is_reported() {
    let ((), records) = logged(|| {
        let _scope = LoggingContext::new("req", HS).entered();
        let other = LoggingContext::new("other", HS);
        logcontext_error(twisted_compat::LogcontextError::RestartFinished { context: other });
    });
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].level, log::Level::Warn);
    assert_eq!(records[0].target, "synapse.logging.context");
    assert_eq!(records[0].message, "Re-starting finished log context other");
    assert_eq!(records[0].request(), "req");
}

// Synapse: semantics 2.9 #91, #93 (a background process logs in its own context)
#[test]
fn a_background_process_logs_under_its_own_name() {
    let ((), records) = logged(|| {
        let _scope = LoggingContext::new("req", HS).entered();
        run_as_background_process("prune", HS, || async {
            log::info!("pruning");
            Err::<(), _>(Failure::msg("disk full"))
        });
        log::info!("request goes on");
    });
    let shown: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.message.as_str(), r.request()))
        .collect();
    assert_eq!(
        shown,
        [
            ("pruning", "prune-0"),
            (
                "Background process 'prune' threw an exception: MessageError: disk full",
                "prune-0"
            ),
            ("request goes on", "req"),
        ]
    );
}

// Synapse: semantics 2.8 #88 (the thread's context has the caller's name: records logged on the worker show it)
#[test]
fn records_logged_on_a_worker_show_the_callers_name() {
    let reactor = Reactor::new().unwrap();
    let (r, c) = (reactor.clone(), LoggingContext::new("GET-9", HS));
    let ((), errors) = capture_logcontext_errors(|| {
        let d = ensure_deferred(async move {
            let _scope = c.entered();
            let records = defer_to_thread(&r, || {
                let ((), records) = logged(|| log::info!("on the worker"));
                Ok::<_, std::io::Error>(
                    records
                        .iter()
                        .map(|r| (r.message.clone(), r.request().to_owned()))
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
            Ok::<_, Failure>(records)
        });
        let r = reactor.clone();
        let d = d.add_both(move |outcome| {
            r.stop().unwrap();
            outcome
        });
        reactor.run().unwrap();
        assert_eq!(
            d.result().value(),
            Some(vec![("on the worker".to_string(), "GET-9".to_string())])
        );
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(current_context().is_sentinel());
}

// Synapse: default log format "%(request)s - %(message)s"
#[test]
fn the_request_prefix_starts_each_message_with_the_context_name() {
    use log::Log;
    struct Messages(std::sync::Mutex<Vec<String>>);
    impl log::Log for Messages {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }
    let filter = LoggingContextFilter::wrap(Messages(std::sync::Mutex::new(Vec::new())))
        .with_request_prefix();
    let emit = |m: &str| filter.log(&log::Record::builder().args(format_args!("{m}")).build());
    emit("outside");
    {
        let _scope = LoggingContext::new("GET-1", HS).entered();
        emit("inside");
    }
    assert_eq!(
        *filter.inner().0.lock().unwrap(),
        ["sentinel - outside", "GET-1 - inside"]
    );
}
