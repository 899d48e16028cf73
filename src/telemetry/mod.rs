//! Logging: tracing to stderr, JSON lines or pretty, filtered by `log.level` or `RUST_LOG`.
//! Lines are written by a dedicated thread in batches ([`batch`]: one `write` per batch, not
//! per line); nothing is lost: when the output falls behind, requests wait rather than lose
//! lines.
//!
//! The per-decision line is an access log ([`AccessLog`]): same destination, same format
//! and same filter (target `authgate::decision`, level info), but serialised directly from
//! a borrowed struct. Through tracing-subscriber's JSON formatter it cost ~21k instructions
//! per decision, a third of the whole cached decision path (callgrind, bench/README.md).

use std::io::Write;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::setting::ConfigError;

pub mod batch;

use batch::{BatchWriter, FlushGuard};

/// `log`: logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line) or `pretty`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `authgate=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl LogConfig {
    /// Rejects a filter tracing cannot parse, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                "is not a valid filter (e.g. info, warn, authgate=debug)",
            ));
        }
        Ok(())
    }
}

/// The installed logging. Keep it alive until exit: dropping it flushes the writer.
pub struct Logging {
    /// Writes what is left when dropped.
    pub guard: FlushGuard,
    /// Where decision lines go.
    pub access: AccessLog,
}

/// Writes one line per decision; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    writer: Option<BatchWriter>,
    format: LogFormat,
}

/// One decision, as logged. Never holds a secret.
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    /// Request id (the proxy's `X-Request-Id`, or generated).
    pub request_id: &'a str,
    /// Original method.
    pub method: &'a str,
    /// Original host.
    pub host: &'a str,
    /// Original (normalised) path; the query is not logged (it may carry secrets).
    pub path: &'a str,
    /// `allow`, `deny`, `unauthenticated`, ...
    pub outcome: &'a str,
    /// HTTP status answered.
    pub status: u16,
    /// Provider that answered, or `none`.
    pub provider: &'a str,
    /// Subject, when authenticated.
    pub subject: &'a str,
    /// Time to decide, in microseconds.
    pub latency_us: u64,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "display")]
    timestamp: humantime::Rfc3339Timestamp,
    level: &'static str,
    message: &'static str,
    #[serde(flatten)]
    record: &'a DecisionRecord<'a>,
    target: &'static str,
}

fn display<S: serde::Serializer>(
    value: &humantime::Rfc3339Timestamp,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl AccessLog {
    /// An access log that writes nothing (tests, tools).
    pub fn disabled() -> Self {
        Self {
            writer: None,
            format: LogFormat::Json,
        }
    }

    /// Writes the line for one decision.
    pub fn record(&self, record: &DecisionRecord<'_>) {
        let Some(writer) = &self.writer else {
            return;
        };
        let timestamp = humantime::format_rfc3339_micros(SystemTime::now());
        let mut line = Vec::with_capacity(384);
        let written = match self.format {
            LogFormat::Json => serde_json::to_writer(
                &mut line,
                &JsonLine {
                    timestamp,
                    level: "INFO",
                    message: "decision",
                    record,
                    target: "authgate::decision",
                },
            )
            .is_ok(),
            LogFormat::Pretty => write_pretty(&mut line, timestamp, record).is_ok(),
        };
        if written {
            line.push(b'\n');
            let _ = (&*writer).write_all(&line);
        }
    }
}

/// The `pretty` decision line. Most values come from the client (request id, method,
/// host, path) or from a credential (subject): each is written as a [`Field`], so that no
/// value can end the line or pass for another `key=value` pair.
fn write_pretty(
    line: &mut Vec<u8>,
    timestamp: humantime::Rfc3339Timestamp,
    record: &DecisionRecord<'_>,
) -> std::io::Result<()> {
    write!(
        line,
        "{timestamp}  INFO authgate::decision: decision request_id={} method={} host={} path={} \
         outcome={} status={} provider={} subject={} latency_us={}",
        Field(record.request_id),
        Field(record.method),
        Field(record.host),
        Field(record.path),
        Field(record.outcome),
        record.status,
        Field(record.provider),
        Field(record.subject),
        record.latency_us
    )
}

/// A value of a `key=value` pair in a pretty line: bare when it is made only of
/// `[A-Za-z0-9._:/-]`, else in double quotes with `"` and `\` escaped, ASCII control
/// characters as `\xNN`, and non-ASCII characters other than letters and digits (line
/// separators, bidi controls, zero-width characters) as `\u{..}`.
struct Field<'a>(&'a str);

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-');
        if !self.0.is_empty() && self.0.chars().all(bare) {
            return f.write_str(self.0);
        }
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                ' '..='~' => f.write_char(c)?,
                c if c.is_ascii() => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_alphanumeric() => f.write_char(c)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
        }
        f.write_char('"')
    }
}

/// Installs the global subscriber and the access log.
pub fn init(config: &LogConfig) -> Logging {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = BatchWriter::spawn("authgate-log", std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let builder = builder.with_writer(writer.clone());
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    let decisions = tracing::enabled!(target: "authgate::decision", tracing::Level::INFO);
    Logging {
        guard,
        access: AccessLog {
            writer: decisions.then_some(writer),
            format: config.format,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pretty(record: &DecisionRecord<'_>) -> String {
        let timestamp = humantime::format_rfc3339_micros(SystemTime::UNIX_EPOCH);
        let mut line = Vec::new();
        write_pretty(&mut line, timestamp, record).unwrap();
        String::from_utf8(line).unwrap()
    }

    fn record<'a>(request_id: &'a str, host: &'a str, path: &'a str) -> DecisionRecord<'a> {
        DecisionRecord {
            request_id,
            method: "GET",
            host,
            path,
            outcome: "deny",
            status: 403,
            provider: "basic",
            subject: "",
            latency_us: 12,
        }
    }

    /// `key=value` pairs of a pretty line, values kept as written (quoted ones whole).
    fn pairs(line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = line;
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=').unwrap();
            let end = if let Some(quoted) = after.strip_prefix('"') {
                let mut escaped = false;
                1 + quoted
                    .char_indices()
                    .find(|&(_, c)| {
                        let close = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close
                    })
                    .unwrap()
                    .0
                    + 1
            } else {
                after.find(' ').unwrap_or(after.len())
            };
            out.push((key.to_owned(), after[..end].to_owned()));
            rest = after[end..].trim_start_matches(' ');
        }
        out
    }

    #[test]
    fn pretty_line_quotes_client_values() {
        let line = pretty(&DecisionRecord {
            method: "GET x=\"1\"",
            subject: "jos\u{e9}\u{202e}",
            ..record("abc outcome=allow\nforged=1", "h\\ost\r", "/a b\u{2028}c")
        });
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000Z  INFO authgate::decision: decision \
             request_id=\"abc outcome=allow\\x0aforged=1\" method=\"GET x=\\\"1\\\"\" \
             host=\"h\\\\ost\\x0d\" path=\"/a b\\u{2028}c\" outcome=deny status=403 \
             provider=basic subject=\"jos\u{e9}\\u{202e}\" latency_us=12"
        );
        // Read back as a log parser would: the forged pairs stay inside the request id.
        let pairs = pairs(line.split_once("decision: decision ").unwrap().1);
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "request_id",
                "method",
                "host",
                "path",
                "outcome",
                "status",
                "provider",
                "subject",
                "latency_us"
            ]
        );
        assert_eq!(pairs[0].1, "\"abc outcome=allow\\x0aforged=1\"");
        assert_eq!(pairs[4].1, "deny");
    }

    #[test]
    fn pretty_line_keeps_plain_values_bare() {
        let line = pretty(&record("4f2a-17", "api.example.org:8443", "/data/v1.2_x"));
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000Z  INFO authgate::decision: decision \
             request_id=4f2a-17 method=GET host=api.example.org:8443 path=/data/v1.2_x \
             outcome=deny status=403 provider=basic subject=\"\" latency_us=12"
        );
    }
}
