//! Synapse's `LoggingContextFilter` for the [`log`] facade: a [`log::Log`]
//! wrapper that adds the current logging context to each record.

use std::rc::Rc;

use log::kv::{self, Key, Source, Value, VisitSource};
use log::{Log, Metadata, Record};

use super::{ContextRequest, LoggingContextOrSentinel, current_context};

/// `LoggingContextFilter`: wraps a [`Log`] and adds the current logging
/// context of the thread that logs to every record, as key-values:
///
/// * `server_name`: the context's server name;
/// * `request`: the context's **name** (Synapse keeps it under that key for
///   its log formats' `%(request)s`);
/// * when the context has a [`ContextRequest`]: `ip_address`, `site_tag`,
///   `requester`, `authenticated_entity` (null when unknown), `method`,
///   `url`, `protocol`, `user_agent`.
///
/// With the sentinel current, `server_name` is
/// [`SENTINEL_SERVER_NAME`](crate::SENTINEL_SERVER_NAME) and `request` is
/// `sentinel`, and, as Synapse's filter does for records it cannot tell are
/// Synapse's, a key the record already has is left as it is. Within a
/// context, the context's values replace the record's.
///
/// [`with_request_prefix`](Self::with_request_prefix) also starts each
/// message with `"<request> - "` (what Synapse's default format shows), for
/// loggers that print no key-values.
///
/// ```
/// use std::sync::Mutex;
/// use log::Log;
/// use twisted_compat::{LoggingContext, LoggingContextFilter};
///
/// // A logger that keeps "request: message" lines.
/// struct Lines(Mutex<Vec<String>>);
/// impl log::Log for Lines {
///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
///     fn log(&self, record: &log::Record<'_>) {
///         let request = record.key_values().get("request".into()).map(|v| v.to_string());
///         self.0.lock().unwrap().push(format!("{}: {}", request.unwrap_or_default(), record.args()));
///     }
///     fn flush(&self) {}
/// }
///
/// // handler.addFilter(LoggingContextFilter())
/// let logger = LoggingContextFilter::wrap(Lines(Mutex::new(Vec::new())));
/// let emit = |msg: &str| logger.log(&log::Record::builder().args(format_args!("{msg}")).build());
/// emit("starting");
/// {
///     let _scope = LoggingContext::new("GET-1", "hs").entered();   // with LoggingContext(name="GET-1", ...):
///     emit("handling");                                             //     logger.info("handling")
/// }
/// assert_eq!(*logger.inner().0.lock().unwrap(), ["sentinel: starting", "GET-1: handling"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LoggingContextFilter<L> {
    inner: L,
    prefix: bool,
}

impl<L: Log> LoggingContextFilter<L> {
    /// `handler.addFilter(LoggingContextFilter())`: `inner` gets every
    /// record with the current context's key-values added.
    ///
    /// ```
    /// use twisted_compat::LoggingContextFilter;
    /// # struct Stderr;
    /// # impl log::Log for Stderr {
    /// #     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
    /// #     fn log(&self, r: &log::Record<'_>) { eprintln!("{}", r.args()) }
    /// #     fn flush(&self) {}
    /// # }
    /// // logging.config: filters: {context: {(): LoggingContextFilter}}
    /// let logger = LoggingContextFilter::wrap(Stderr);
    /// let _ = log::set_logger(Box::leak(Box::new(logger)));
    /// log::set_max_level(log::LevelFilter::Info);
    /// ```
    pub fn wrap(inner: L) -> LoggingContextFilter<L> {
        LoggingContextFilter {
            inner,
            prefix: false,
        }
    }

    /// Also starts each message with `"<request> - "`, the context's name
    /// (`sentinel` outside any), as Synapse's default log format
    /// (`%(request)s - %(message)s`) shows it.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use log::Log;
    /// use twisted_compat::{LoggingContext, LoggingContextFilter};
    /// struct Lines(Mutex<Vec<String>>);
    /// impl log::Log for Lines {
    ///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
    ///     fn log(&self, r: &log::Record<'_>) { self.0.lock().unwrap().push(r.args().to_string()) }
    ///     fn flush(&self) {}
    /// }
    /// let logger = LoggingContextFilter::wrap(Lines(Mutex::new(Vec::new()))).with_request_prefix();
    /// let _scope = LoggingContext::new("GET-1", "hs").entered();
    /// // format: "%(request)s - %(message)s"
    /// logger.log(&log::Record::builder().args(format_args!("phew")).build());
    /// assert_eq!(*logger.inner().0.lock().unwrap(), ["GET-1 - phew"]);
    /// ```
    pub fn with_request_prefix(mut self) -> LoggingContextFilter<L> {
        self.prefix = true;
        self
    }

    /// The wrapped logger.
    ///
    /// ```
    /// use twisted_compat::LoggingContextFilter;
    /// struct Quiet;
    /// impl log::Log for Quiet {
    ///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { false }
    ///     fn log(&self, _: &log::Record<'_>) {}
    ///     fn flush(&self) {}
    /// }
    /// let filter = LoggingContextFilter::wrap(Quiet);
    /// let _quiet: &Quiet = filter.inner();              // the handler the filter is attached to
    /// ```
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<L: Log> Log for LoggingContextFilter<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    /// `filter(record)`, then the wrapped logger's `log`.
    fn log(&self, record: &Record<'_>) {
        let context = current_context();
        let fields = ContextFields::of(&context, record.key_values());
        let mut builder = Record::builder();
        builder
            .metadata(record.metadata().clone())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .key_values(&fields);
        if self.prefix {
            self.inner.log(
                &builder
                    .args(format_args!("{} - {}", context.name(), record.args()))
                    .build(),
            );
        } else {
            self.inner.log(&builder.args(*record.args()).build());
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// The keys the filter sets (besides the request's).
const CONTEXT_KEYS: [&str; 2] = ["server_name", "request"];

/// The keys a request adds.
const REQUEST_KEYS: [&str; 8] = [
    "ip_address",
    "site_tag",
    "requester",
    "authenticated_entity",
    "method",
    "url",
    "protocol",
    "user_agent",
];

/// A record's key-values with the context's: the record's source, read
/// through, plus the values the filter sets.
struct ContextFields<'a> {
    original: &'a dyn Source,
    /// Within a context: its values replace the record's. In the sentinel:
    /// only keys the record lacks are added.
    replace: bool,
    server_name: String,
    request_name: String,
    request: Option<Rc<ContextRequest>>,
}

impl<'a> ContextFields<'a> {
    fn of(context: &LoggingContextOrSentinel, original: &'a dyn Source) -> ContextFields<'a> {
        ContextFields {
            original,
            replace: !context.is_sentinel(),
            server_name: context.server_name().to_owned(),
            request_name: context.name().to_owned(),
            request: context.request(),
        }
    }

    /// The filter's own pairs, in Synapse's order.
    fn visit_own<'kvs>(
        &'kvs self,
        visitor: &mut dyn VisitSource<'kvs>,
        skip_present: bool,
    ) -> Result<(), kv::Error> {
        let mut pair = |key: &'kvs str, value: Value<'kvs>| {
            if skip_present && self.original.get(Key::from_str(key)).is_some() {
                return Ok(());
            }
            visitor.visit_pair(Key::from_str(key), value)
        };
        pair(CONTEXT_KEYS[0], Value::from(self.server_name.as_str()))?;
        pair(CONTEXT_KEYS[1], Value::from(self.request_name.as_str()))?;
        if let Some(r) = &self.request {
            let optional = |v: &'kvs Option<String>| match v {
                Some(s) => Value::from(s.as_str()),
                None => Value::null(),
            };
            pair("ip_address", Value::from(r.ip_address.as_str()))?;
            pair("site_tag", Value::from(r.site_tag.as_str()))?;
            pair("requester", optional(&r.requester))?;
            pair("authenticated_entity", optional(&r.authenticated_entity))?;
            pair("method", Value::from(r.method.as_str()))?;
            pair("url", Value::from(r.url.as_str()))?;
            pair("protocol", Value::from(r.protocol.as_str()))?;
            pair("user_agent", Value::from(r.user_agent.as_str()))?;
        }
        Ok(())
    }

    fn sets(&self, key: &str) -> bool {
        CONTEXT_KEYS.contains(&key) || (self.request.is_some() && REQUEST_KEYS.contains(&key))
    }
}

impl Source for ContextFields<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        if self.replace {
            self.visit_own(visitor, false)?;
            self.original.visit(&mut SkipKeys {
                inner: visitor,
                fields: self,
            })
        } else {
            self.original.visit(visitor)?;
            self.visit_own(visitor, true)
        }
    }
}

/// Passes a record's pairs on, except those the context replaces.
struct SkipKeys<'v, 'f, 'kvs> {
    inner: &'v mut dyn VisitSource<'kvs>,
    fields: &'f ContextFields<'f>,
}

impl<'kvs> VisitSource<'kvs> for SkipKeys<'_, '_, 'kvs> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        if self.fields.sets(key.as_str()) {
            Ok(())
        } else {
            self.inner.visit_pair(key, value)
        }
    }
}
