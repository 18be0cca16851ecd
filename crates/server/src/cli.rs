//! Flags and process set-up shared by the tier binaries.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::Instant;

use proxy::access_log::{self, AccessLogSink, AccessRecord};
use proxy::forwarded::TrustedProxies;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP, multiplexed (WebSocket upgrades still use
    /// HTTP/1.1).
    H2c,
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Flags every tier has.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Directory of Kubernetes manifests (multi-document YAML/JSON) to serve from, re-read on
    /// change. Without it the Kubernetes API is watched (in-cluster config, KUBECONFIG or
    /// --kubeconfig).
    #[arg(long, value_name = "DIR", env = "TANDEM_MANIFESTS")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig file for the API source (default: in-cluster config, then KUBECONFIG).
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch namespaced objects in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// NAMESPACE/NAME of the Service fronting this tier: its spec.externalIPs (else its
    /// status.loadBalancer.ingress) become the Ingresses' status addresses.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub publish_service: Option<String>,

    /// Comma-separated addresses (IPs or hostnames) written into Ingress status instead of a
    /// publish Service's.
    #[arg(long, value_name = "ADDRS", conflicts_with = "publish_service")]
    pub publish_status_address: Option<String>,

    /// Name of the coordination.k8s.io/v1 Lease electing the replica that writes status
    /// (default: tandem-<tier>-<ingress class>).
    #[arg(long, value_name = "NAME")]
    pub election_id: Option<String>,

    /// Namespace of the election Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub election_namespace: Option<String>,

    /// This replica's identity in the election (default: $POD_NAME, else hostname-pid).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,

    /// How often the Lease is renewed (and taken when free).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    pub lease_renew_interval: Duration,

    /// Address of the admin listener: /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10254")]
    pub admin_listen: String,

    /// Serve Ingresses with no class too, even if our IngressClass is not the cluster default
    /// (annotation ingressclass.kubernetes.io/is-default-class: "true").
    #[arg(long)]
    pub watch_ingress_without_class: bool,

    /// Comma-separated CIDRs (or addresses) whose X-Forwarded-*/Forwarded headers are trusted,
    /// normally the edge tier's pod network. From anyone else they are replaced.
    #[arg(long, value_name = "CIDRS", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Timeout for connecting to a backend endpoint; on expiry another endpoint is tried.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Timeout for each read from a backend (a response that stalls this long fails with 504).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_read_timeout: Duration,

    /// Timeout for each write to a backend.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_write_timeout: Duration,

    /// How long an idle keep-alive connection to a backend stays in the pool.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_keepalive_timeout: Duration,

    /// After SIGTERM, /readyz fails at once but listeners keep accepting this long, so load
    /// balancers and kube-proxy stop sending before connections are refused.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub shutdown_delay: Duration,

    /// After the shutdown delay, how long in-flight requests get to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Do not write access-log lines (events are still logged).
    #[arg(long)]
    pub no_access_log: bool,

    /// Do not count per-request metrics (config, endpoint and TLS metrics stay).
    #[arg(long)]
    pub no_request_metrics: bool,

    /// Protocol spoken to every backend whose Ingress has no `backend-protocol` annotation
    /// (default: each Service port's `appProtocol` decides — `kubernetes.io/h2c` is h2c, anything
    /// else HTTP/1.1; h2c toward the router measured faster, see BENCHMARKS.md). WebSocket
    /// upgrades always use HTTP/1.1.
    #[arg(long, value_enum)]
    pub upstream_protocol: Option<UpstreamProtocol>,

    /// Longest request line (method, target, version) in bytes; longer → 414.
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    pub max_request_line: usize,

    /// Longest single request header field (name and value) in bytes; longer → 431.
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    pub max_header_size: usize,

    /// Largest total size of the request header fields in bytes; larger → 431.
    #[arg(long, value_name = "BYTES", default_value_t = 32768)]
    pub max_headers_size: usize,

    /// Most request header fields; more → 431.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_header_count: usize,

    /// Worker threads of the data path (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Log lines queued for the writer thread at most; beyond that lines are dropped (and counted)
/// rather than blocking a worker.
const LOG_QUEUE_LINES: usize = 65_536;

/// The writer thread writes out at least this much at once when lines are waiting.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

static LOG_QUEUE: OnceLock<Arc<LogQueue>> = OnceLock::new();
static LOG_WRITER: Mutex<Option<(thread::JoinHandle<()>, mpsc::Receiver<()>)>> = Mutex::new(None);

/// What the writer thread is given: a line formatted by `tracing`, or an access-log record it
/// formats itself (so the worker that served the request does not).
enum LogMsg {
    Line(Vec<u8>),
    Access(Box<AccessRecord>),
    /// Write out what is queued and stop.
    Shutdown,
}

/// The bounded queue to the writer thread. Never blocks the sender: a line that does not fit is
/// dropped and counted.
struct LogQueue {
    tx: mpsc::SyncSender<LogMsg>,
    dropped: AtomicU64,
}

impl LogQueue {
    fn push(&self, msg: LogMsg) {
        if self.tx.try_send(msg).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `tracing`'s writer: each formatted event arrives in one `write`.
#[derive(Clone)]
struct QueueWriter(Arc<LogQueue>);

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(LogMsg::Line(buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct AccessSink(Arc<LogQueue>);

impl AccessLogSink for AccessSink {
    fn send(&self, record: Box<AccessRecord>) {
        self.0.push(LogMsg::Access(record));
    }
}

/// How long the writer thread sleeps when it found nothing to write, right after it wrote
/// something. It polls rather than blocks on the queue, so a worker queueing a line never has to
/// wake it (a wake-up per request is a futex call and a context switch on the worker's CPU:
/// measured +7 µs per request).
const IDLE_POLL_MIN: Duration = Duration::from_millis(5);
/// The longest sleep of an idle writer: the sleep doubles while the queue stays empty, so an
/// idle process does not wake 200 times a second. Even at this interval the queue
/// ([`LOG_QUEUE_LINES`]) holds far more than a worker can produce in the meantime.
const IDLE_POLL_MAX: Duration = Duration::from_millis(100);

/// The writer's next sleep after an empty poll that slept `last`.
fn next_idle_poll(last: Duration) -> Duration {
    (last * 2).min(IDLE_POLL_MAX)
}

/// Writes queued lines to `out` until shut down (or every sender is gone), in batches: whatever
/// is waiting is formatted into one buffer and written at once; when nothing is waiting the
/// thread sleeps, [`IDLE_POLL_MIN`] after activity, longer while it stays idle.
fn write_lines(rx: &mpsc::Receiver<LogMsg>, out: &mut impl Write) {
    let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut idle_poll = IDLE_POLL_MIN;
    loop {
        let mut stop = false;
        let mut got = false;
        loop {
            match rx.try_recv() {
                Ok(LogMsg::Line(line)) => buf.extend_from_slice(&line),
                Ok(LogMsg::Access(record)) => record.write_json(&mut buf),
                Ok(LogMsg::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => stop = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
            got = true;
            if stop || buf.len() >= WRITE_BATCH_BYTES {
                break;
            }
        }
        if !buf.is_empty() {
            // Nothing useful to do about a failing stdout but to keep going.
            let _ = out.write_all(&buf).and_then(|()| out.flush());
            buf.clear();
            buf.shrink_to(WRITE_BATCH_BYTES);
        }
        if stop {
            return;
        }
        if got {
            idle_poll = IDLE_POLL_MIN;
        } else {
            thread::sleep(idle_poll);
            idle_poll = next_idle_poll(idle_poll);
        }
    }
}

/// Installs the tracing subscriber (RUST_LOG filters; default `info`). Lines are written to
/// stdout by a writer thread through a bounded queue: a slow stdout never blocks the data path;
/// lines that do not fit are dropped and counted (`tandem_log_lines_dropped_total`). With the
/// JSON format, access-log records are formatted on that thread too, not on the worker.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let (tx, rx) = mpsc::sync_channel(LOG_QUEUE_LINES);
    let queue = Arc::new(LogQueue {
        tx,
        dropped: AtomicU64::new(0),
    });
    let (done_tx, done_rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || {
            write_lines(&rx, &mut std::io::stdout());
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(handle) => {
            if let Ok(mut slot) = LOG_WRITER.lock() {
                *slot = Some((handle, done_rx));
            }
        }
        Err(e) => eprintln!("cannot start the log writer thread: {e}"),
    }
    let _ = LOG_QUEUE.set(queue.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = QueueWriter(queue.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || writer.clone());
    match format {
        LogFormat::Json => {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .init();
            // The filter is fixed for the process's life: when it lets access lines through,
            // records bypass tracing and are formatted by the writer thread into the same line.
            if tracing::enabled!(target: "tandem::access", tracing::Level::INFO) {
                access_log::set_sink(Box::new(AccessSink(queue)));
            }
        }
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}

/// Writes out the queued log lines (waits at most a second); call before the process exits.
pub fn flush_logs() {
    let Some(queue) = LOG_QUEUE.get() else {
        return;
    };
    let Some((handle, done)) = LOG_WRITER.lock().ok().and_then(|mut w| w.take()) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut msg = LogMsg::Shutdown;
    loop {
        match queue.tx.try_send(msg) {
            Ok(()) => break,
            Err(mpsc::TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if done.recv_timeout(left).is_ok() {
        let _ = handle.join();
    }
}

/// Log lines dropped because the queue was full.
pub fn log_lines_dropped() -> u64 {
    LOG_QUEUE
        .get()
        .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_line_in_order_and_stops_on_shutdown() {
        let (tx, rx) = mpsc::sync_channel(16);
        for i in 0..10 {
            tx.send(LogMsg::Line(format!("line {i}\n").into_bytes()))
                .unwrap();
        }
        tx.send(LogMsg::Shutdown).unwrap();
        tx.send(LogMsg::Line(b"after\n".to_vec())).unwrap();
        let mut out = Vec::new();
        write_lines(&rx, &mut out);
        let want: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn idle_poll_doubles_up_to_its_ceiling() {
        let mut poll = IDLE_POLL_MIN;
        let mut seen = vec![poll];
        for _ in 0..6 {
            poll = next_idle_poll(poll);
            seen.push(poll);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [5, 10, 20, 40, 80, 100, 100]);
    }

    /// A writer that backed off while idle still writes a line that arrives later, and still
    /// stops on shutdown.
    #[test]
    fn idle_writer_still_writes_late_lines() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = mpsc::sync_channel(16);
        let out = Shared::default();
        let mut sink = out.clone();
        let writer = thread::spawn(move || write_lines(&rx, &mut sink));
        thread::sleep(IDLE_POLL_MAX * 3);
        tx.send(LogMsg::Line(b"late\n".to_vec())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*out.0.lock().unwrap(), b"late\n");
        tx.send(LogMsg::Shutdown).unwrap();
        writer.join().unwrap();
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (tx, rx) = mpsc::sync_channel(2);
        let q = LogQueue {
            tx,
            dropped: AtomicU64::new(0),
        };
        for _ in 0..5 {
            q.push(LogMsg::Line(b"x\n".to_vec()));
        }
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        drop(q);
        let mut out = Vec::new();
        write_lines(&rx, &mut out);
        assert_eq!(out, b"x\nx\n");
    }
}
