//! JSON log lines: one object per event, fields at the top level, in the shape of
//! tracing-subscriber's flattened JSON format (`timestamp`, `level`, the event's fields in
//! order with `message` first, `target`), which log pipelines and our audit consumers read.
//!
//! Why not tracing-subscriber's own JSON formatter: every decision writes an audit event, and
//! that formatter (a serde map per event, a `String` per displayed field, a second copy of the
//! line) cost about 1 µs of a ~10 µs check. This layer serializes straight into a reused
//! per-thread buffer with serde_json's string escaping and hands the finished line to the writer
//! in one call. It formats; what is logged is still decided by the filter in front of it.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// Lines longer than this do not stay in the per-thread buffer after they are written.
const KEEP_BUFFER_BYTES: usize = 16 * 1024;

/// A layer writing each event as one JSON line to `W`.
pub struct JsonLines<W> {
    make_writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
        }
        let write = |line: &mut Vec<u8>| {
            line.clear();
            format_event(event, line);
            // A failed write (a closed stdout) loses the line; logging must not stop checks.
            let _ = self
                .make_writer
                .make_writer_for(event.metadata())
                .write_all(line);
            if line.capacity() > KEEP_BUFFER_BYTES {
                *line = Vec::with_capacity(1024);
            }
        };
        // An event logged while this thread is formatting one (from a field's Debug impl) gets a
        // buffer of its own rather than a panic.
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut Vec::new()),
        });
    }
}

/// `{"timestamp":…,"level":…,<fields>,"target":…}\n` into `out`.
fn format_event(event: &Event<'_>, out: &mut Vec<u8>) {
    // Events bridged from the `log` crate carry their real target in `log.*` fields.
    let normalized = event.normalized_metadata();
    let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
    out.extend_from_slice(b"{\"timestamp\":\"");
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{}",
        humantime::format_rfc3339_micros(SystemTime::now())
    );
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(metadata.level().as_str().as_bytes());
    out.push(b'"');
    event.record(&mut Fields {
        out,
        scratch: String::new(),
    });
    out.extend_from_slice(b",\"target\":");
    string(out, metadata.target());
    out.extend_from_slice(b"}\n");
}

/// A JSON string literal, escaped by serde_json. Most strings (routes, reasons, paths, ids)
/// need no escaping: found with a fold the compiler vectorizes, they are copied as they are,
/// which is what serde_json would write; serde_json looks each byte up in a table.
fn string(out: &mut Vec<u8>, s: &str) {
    let plain = s.bytes().fold(true, |plain, c| {
        plain & (c >= 0x20) & (c != b'"') & (c != b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `,"name":value` per field.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    /// Reused for fields recorded through `Debug`/`Display`.
    scratch: String,
}

impl Fields<'_> {
    /// Writes `,"name":` and says whether to write the value: the `log.*` fields that carry a
    /// `log`-crate record's metadata are already in `target` (as tracing-subscriber does).
    fn key(&mut self, field: &Field) -> bool {
        if field.name().starts_with("log.") {
            return false;
        }
        self.out.push(b',');
        string(self.out, field.name());
        self.out.push(b':');
        true
    }

    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            string(self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.number(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            // serde_json writes non-finite numbers as null, as JSON requires.
            let _ = serde_json::to_writer(&mut *self.out, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.scratch.clear();
            let _ = write!(self.scratch, "{value:?}");
            string(self.out, &self.scratch);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for text in [
            "",
            "plain /documents/42 route-name_1.2",
            "quote \" inside",
            "back\\slash",
            "tab\tnew\nline\u{1}\u{1f}",
            "del \u{7f} and non-ASCII é ü 東京 😀",
            "</script>",
        ] {
            let mut ours = Vec::new();
            string(&mut ours, text);
            assert_eq!(
                String::from_utf8(ours).expect("utf-8"),
                serde_json::to_string(text).expect("serializes"),
                "{text:?}"
            );
        }
    }

    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects formatted log output in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs at debug level and above, as this layer writes it.
    pub(in crate::telemetry) fn capture(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            JsonLines::new(move || writer.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let text = capture(f);
        assert!(text.ends_with('\n'), "every line ends: {text:?}");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn an_event_is_one_object_with_its_fields_at_the_top_level() {
        let logged = lines(|| {
            tracing::info!(
                target: "portcullis::audit",
                text = "a \"quoted\"\nline\u{1}",
                count = 42u64,
                delta = -3i64,
                ok = true,
                ratio = 0.5f64,
                ip = %std::net::Ipv6Addr::LOCALHOST,
                "decision"
            );
        });
        assert_eq!(logged.len(), 1);
        let line = &logged[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "decision");
        assert_eq!(line["target"], "portcullis::audit");
        assert_eq!(line["text"], "a \"quoted\"\nline\u{1}");
        assert_eq!(line["count"], 42);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ip"], "::1");
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        humantime::parse_rfc3339(timestamp).expect("an RFC 3339 timestamp");
    }

    #[test]
    fn fields_keep_their_order_with_the_message_first() {
        let text = capture(|| {
            tracing::warn!(first = 1u64, second = "two", "hello");
        });
        let order: Vec<usize> = [
            "\"timestamp\"",
            "\"level\"",
            "\"message\"",
            "\"first\"",
            "\"second\"",
            "\"target\"",
        ]
        .iter()
        .map(|key| text.find(key).expect("key present"))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn log_crate_records_keep_their_target_and_lose_the_log_fields() {
        let logged = lines(|| {
            tracing_log::format_trace(
                &log::Record::builder()
                    .target("some_dependency::pool")
                    .level(log::Level::Warn)
                    .module_path(Some("some_dependency::pool"))
                    .file(Some("pool.rs"))
                    .line(Some(7))
                    .args(format_args!("connection reset"))
                    .build(),
            )
            .expect("bridged");
        });
        let line = logged[0].as_object().expect("object");
        assert_eq!(line["target"], "some_dependency::pool");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "connection reset");
        assert!(line.keys().all(|key| !key.starts_with("log.")), "{line:?}");
    }

    #[test]
    fn non_finite_numbers_and_errors_stay_valid_json() {
        let error = std::io::Error::other("disk \"full\"");
        let logged = lines(|| {
            tracing::error!(
                value = f64::NAN,
                error = &error as &dyn std::error::Error,
                "failed"
            );
        });
        assert_eq!(logged[0]["value"], serde_json::Value::Null);
        assert_eq!(logged[0]["error"], "disk \"full\"");
        assert_eq!(logged[0]["level"], "ERROR");
    }
}
