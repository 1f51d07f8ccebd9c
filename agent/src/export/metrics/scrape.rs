//! What one `/metrics` scrape costs. At 10 000 histogram series the body is
//! about 40 MiB; building it per request, with no bound on parallel
//! scrapes, let a few scrapers at once exhaust the pod's memory. So:
//!
//! - one body per format is built at a time, directly in the format asked
//!   for (the Prometheus text is converted line by line while encoding, not
//!   from a second, OpenMetrics copy), presized from the last one;
//! - a body younger than [`CACHE_FOR`] is served again to every scraper
//!   that asks (Prometheus HA pairs, a curl during an incident) instead of
//!   being built again;
//! - at most [`MAX_IN_FLIGHT`] responses are being sent at once; a scraper
//!   beyond waits up to [`QUEUE_WAIT`], then gets 503 (its `up` goes 0 for
//!   that scrape; the agent's memory stays bounded).
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// How long a built body is served again.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// Responses being sent at once (each may hold a body of its own age).
pub const MAX_IN_FLIGHT: usize = 4;
/// How long a scrape beyond [`MAX_IN_FLIGHT`] waits for its turn.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Size of the chunks a body is sent in (slices of the one body, no copy).
const CHUNK: usize = 64 * 1024;

/// The two expositions `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` asks for it.
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("too many concurrent scrapes (at most {MAX_IN_FLIGHT}); retry")]
    Busy,
    #[error("encoding failed")]
    Encode,
}

#[derive(Default)]
struct Slot {
    built: Option<Built>,
    /// Size of the last body, to presize the next.
    last_len: usize,
}

struct Built {
    body: Bytes,
    at: Instant,
}

/// Builds, caches and hands out bodies; cheap to clone.
#[derive(Clone)]
pub struct Scrapes {
    registry: Arc<Registry>,
    /// The last body per format.
    slots: Arc<[Mutex<Slot>; 2]>,
    in_flight: Arc<Semaphore>,
    queue_wait: Duration,
}

/// A body to send and the turn it holds until it is sent (or the scraper
/// goes away).
pub struct Turn {
    pub body: Bytes,
    permit: OwnedSemaphorePermit,
}

impl Scrapes {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            slots: Arc::new([Mutex::default(), Mutex::default()]),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            queue_wait: QUEUE_WAIT,
        }
    }

    /// Wait for a turn, then a body no older than [`CACHE_FOR`].
    pub async fn scrape(&self, format: Format) -> Result<Turn, ScrapeError> {
        let permit = tokio::time::timeout(self.queue_wait, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| ScrapeError::Busy)?
            .map_err(|_| ScrapeError::Busy)?;
        let body = self.body(format).await?;
        Ok(Turn { body, permit })
    }

    async fn body(&self, format: Format) -> Result<Bytes, ScrapeError> {
        // Scrapers of one format queue here: the first builds, the others
        // get its body.
        let mut slot = self.slots[format.slot()].lock().await;
        if let Some(b) = slot.built.as_ref()
            && b.at.elapsed() < CACHE_FOR
        {
            return Ok(b.body.clone());
        }
        // Drop the old body before building the next (unless a response
        // still sends it), so two are not held for nothing.
        slot.built = None;
        let hint = (slot.last_len + slot.last_len / 8).max(64 * 1024);
        let registry = self.registry.clone();
        let body = tokio::task::spawn_blocking(move || encode(&registry, format, hint))
            .await
            .map_err(|_| ScrapeError::Encode)??;
        slot.last_len = body.len();
        slot.built = Some(Built {
            body: body.clone(),
            at: Instant::now(),
        });
        // Between scrapes (every 15 s or so) the agent holds no body: it is
        // let go once it is too old to be served.
        let (slots, ptr) = (self.slots.clone(), body.as_ptr() as usize);
        tokio::spawn(async move {
            tokio::time::sleep(CACHE_FOR).await;
            let mut slot = slots[format.slot()].lock().await;
            if slot
                .built
                .as_ref()
                .is_some_and(|b| b.body.as_ptr() as usize == ptr)
            {
                slot.built = None;
            }
        });
        Ok(body)
    }
}

impl Turn {
    /// The body as a stream of chunks; the turn is given back when the
    /// stream ends or is dropped.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(
            (self.body, Some(self.permit)),
            |(mut rest, permit)| async move {
                if rest.is_empty() {
                    drop(permit);
                    return None;
                }
                let chunk = rest.split_to(rest.len().min(CHUNK));
                Some((Ok(chunk), (rest, permit)))
            },
        )
    }
}

/// Encode `registry` in `format` into one buffer of about `hint` bytes.
pub fn encode(registry: &Registry, format: Format, hint: usize) -> Result<Bytes, ScrapeError> {
    let mut out = String::with_capacity(hint);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
        Format::Text => {
            let mut w = TextWriter::new(&mut out);
            prometheus_client::encoding::text::encode(&mut w, registry).and_then(|()| w.finish())
        }
    }
    .map_err(|_| ScrapeError::Encode)?;
    Ok(Bytes::from(out))
}

/// OpenMetrics in, Prometheus text 0.0.4 out, a line at a time: counters
/// are typed under their `_total` name, `info` becomes a gauge named
/// `_info`, exemplars, `# UNIT` and `# EOF` go (0.0.4 parsers reject them).
pub struct TextWriter<'a> {
    out: &'a mut String,
    line: String,
    help: Option<String>,
}

impl<'a> TextWriter<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Self {
            out,
            line: String::with_capacity(512),
            help: None,
        }
    }

    /// Convert what is left (a last line without its newline).
    pub fn finish(mut self) -> std::fmt::Result {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.convert(&line);
        }
        Ok(())
    }

    fn convert(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Kept until its TYPE line: the name may change there.
            let text = rest.split_once(' ').map_or("", |(_, t)| t);
            self.help = Some(text.to_string());
            return;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, ty) = match ty {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", ty),
                _ => ("", "untyped"),
            };
            if let Some(text) = self.help.take() {
                let _ = writeln!(self.out, "# HELP {name}{suffix} {text}");
            }
            let _ = writeln!(self.out, "# TYPE {name}{suffix} {ty}");
            return;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            return;
        }
        let sample = match exemplar_start(line) {
            Some(i) => &line[..i],
            None => line,
        };
        self.out.push_str(sample);
        self.out.push('\n');
    }
}

/// Where a sample line's exemplar (` # {`) starts, searching only after its
/// label set: a label value may itself contain ` # {`.
fn exemplar_start(line: &str) -> Option<usize> {
    let after_labels = labels_end(line).unwrap_or(0);
    line[after_labels..].find(" # {").map(|i| after_labels + i)
}

/// Index just past the `}` closing the label set of a sample line, skipping
/// quoted (escaped) label values.
fn labels_end(line: &str) -> Option<usize> {
    let open = line.find('{')?;
    if line[..open].contains(' ') {
        return None;
    }
    let b = line.as_bytes();
    let (mut i, mut quoted) = (open + 1, false);
    while i < b.len() {
        match (b[i], quoted) {
            (b'\\', true) => i += 1,
            (b'"', q) => quoted = !q,
            (b'}', false) => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

impl Write for TextWriter<'_> {
    fn write_str(&mut self, mut s: &str) -> std::fmt::Result {
        while let Some(nl) = s.find('\n') {
            if self.line.is_empty() {
                self.convert(&s[..nl]);
            } else {
                self.line.push_str(&s[..nl]);
                let line = std::mem::take(&mut self.line);
                self.convert(&line);
                self.line = line;
                self.line.clear();
            }
            s = &s[nl + 1..];
        }
        self.line.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::metrics::tests::sample_registry;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn text_is_converted_while_encoding_as_from_a_whole_openmetrics_body() {
        let reg = sample_registry();
        let om = encode(&reg, Format::OpenMetrics, 0).unwrap();
        let direct = encode(&reg, Format::Text, 0).unwrap();
        // The process collector reads RSS and CPU anew at each encode, and
        // other tests allocate meanwhile: compare everything but its values.
        let stable = |t: &str| -> String {
            t.lines()
                .filter(|l| !l.starts_with("process_"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        assert_eq!(
            stable(text(&direct)),
            stable(&crate::export::metrics::openmetrics_to_prometheus(text(
                &om
            )))
        );
        assert!(text(&direct).contains("# TYPE sloguard_events_total counter"));
        assert!(!text(&direct).contains("# EOF"));
    }

    #[test]
    fn an_exemplar_marker_inside_a_label_value_is_not_cut() {
        let om = "# TYPE x histogram\n\
            x_bucket{r=\"/a # {b}\\\" # {c\",le=\"1.0\"} 1 # {trace_id=\"ab\"} 0.5\n\
            x_count{r=\"/a # {b}\"} 1\n# EOF\n";
        assert_eq!(
            crate::export::metrics::openmetrics_to_prometheus(om),
            "# TYPE x histogram\n\
             x_bucket{r=\"/a # {b}\\\" # {c\",le=\"1.0\"} 1\n\
             x_count{r=\"/a # {b}\"} 1\n"
        );
    }

    #[tokio::test]
    async fn scrapers_within_a_second_share_one_body_per_format() {
        let s = Scrapes::new(Arc::new(sample_registry()));
        let a = s.scrape(Format::Text).await.unwrap();
        let b = s.scrape(Format::Text).await.unwrap();
        // The same buffer, not an equal copy.
        assert_eq!(a.body.as_ptr(), b.body.as_ptr());
        let om = s.scrape(Format::OpenMetrics).await.unwrap();
        assert!(text(&om.body).ends_with("# EOF\n"));
        assert_ne!(a.body.as_ptr(), om.body.as_ptr());
        // Too old to be served: let go, not kept until the next scrape.
        tokio::time::sleep(CACHE_FOR + Duration::from_millis(300)).await;
        assert!(s.slots[Format::Text.slot()].lock().await.built.is_none());
    }

    #[tokio::test]
    async fn scrapes_beyond_the_bound_wait_then_get_busy() {
        let mut s = Scrapes::new(Arc::new(sample_registry()));
        s.queue_wait = Duration::from_millis(50);
        let mut held = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            held.push(s.scrape(Format::Text).await.unwrap());
        }
        let t0 = tokio::time::Instant::now();
        assert!(matches!(
            s.scrape(Format::Text).await,
            Err(ScrapeError::Busy)
        ));
        assert!(t0.elapsed() >= s.queue_wait);
        // A response sent in full gives its turn back.
        let first = held.pop().unwrap();
        let len = first.body.len();
        let mut stream = std::pin::pin!(first.into_stream());
        let mut sent = 0;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            sent += chunk.unwrap().len();
        }
        assert_eq!(sent, len);
        assert!(s.scrape(Format::Text).await.is_ok());
    }

    /// Ten scrapes at once over HTTP: all answered, one body.
    #[tokio::test]
    async fn ten_parallel_http_scrapes_are_all_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = crate::export::metrics::MetricsState {
            registry: Arc::new(sample_registry()),
            ready: Default::default(),
            healthy: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            status: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::export::metrics::serve_on(listener, state, async {
            let _ = stopped.await;
        }));
        let scrapes = (0..10).map(|_| {
            tokio::spawn(async move {
                let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                let mut out = Vec::new();
                c.read_to_end(&mut out).await.unwrap();
                String::from_utf8(out).unwrap()
            })
        });
        let mut bodies = std::collections::BTreeSet::new();
        for r in futures_util::future::join_all(scrapes).await {
            let r = r.unwrap();
            assert!(r.starts_with("HTTP/1.0 200"), "{r}");
            bodies.insert(r.split_once("\r\n\r\n").unwrap().1.to_string());
        }
        assert_eq!(bodies.len(), 1, "one body within the cache second");
        crate::export::metrics::lint::check(bodies.first().unwrap())
            .unwrap_or(Ok(()))
            .unwrap();
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
