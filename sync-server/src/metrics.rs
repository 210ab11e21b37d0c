//! Prometheus text format, written by hand: a few counters, one gauge, one histogram.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use nexus_sync_protocol::ErrorCode;

/// Upper bounds of the relay latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CODES: [ErrorCode; 10] = [
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::BadRequest,
    ErrorCode::Gone,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket sessions.
    pub connections: AtomicI64,
    /// WebSocket sessions accepted since start.
    pub connections_total: AtomicU64,
    /// Changes stored.
    pub pushes: AtomicU64,
    /// Snapshots stored.
    pub snapshots: AtomicU64,
    /// Writes acknowledged (WebSocket acks and HTTP answers).
    pub acks: AtomicU64,
    /// Blob bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes of frames sent to WebSocket clients.
    pub bytes_out: AtomicU64,
    /// Entries delivered to WebSocket clients.
    pub entries_out: AtomicU64,
    /// HTTP requests.
    pub http_requests: AtomicU64,
    /// TLS handshakes that failed or timed out (with `--tls-cert`).
    pub tls_failures: AtomicU64,
    /// Documents deleted (forgetting on a device).
    pub docs_deleted: AtomicU64,
    /// Spaces deleted.
    pub spaces_deleted: AtomicU64,
    errors: [AtomicU64; 10],
    latency_buckets: [AtomicU64; 14],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts an error sent to a client.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Records the time from receiving a write to sending it to a subscriber.
    pub fn relay(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "nexus_sync_connections_total",
            "WebSocket sessions accepted.",
            self.connections_total.load(Relaxed),
        );
        counter(
            "nexus_sync_pushes_total",
            "Changes stored.",
            self.pushes.load(Relaxed),
        );
        counter(
            "nexus_sync_snapshots_total",
            "Snapshots stored.",
            self.snapshots.load(Relaxed),
        );
        counter(
            "nexus_sync_acks_total",
            "Writes acknowledged after commit.",
            self.acks.load(Relaxed),
        );
        counter(
            "nexus_sync_received_bytes_total",
            "Blob bytes received.",
            self.bytes_in.load(Relaxed),
        );
        counter(
            "nexus_sync_sent_bytes_total",
            "WebSocket frame bytes sent.",
            self.bytes_out.load(Relaxed),
        );
        counter(
            "nexus_sync_entries_sent_total",
            "Entries sent to WebSocket clients.",
            self.entries_out.load(Relaxed),
        );
        counter(
            "nexus_sync_http_requests_total",
            "HTTP requests.",
            self.http_requests.load(Relaxed),
        );
        counter(
            "nexus_sync_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            self.tls_failures.load(Relaxed),
        );
        counter(
            "nexus_sync_docs_deleted_total",
            "Documents deleted.",
            self.docs_deleted.load(Relaxed),
        );
        counter(
            "nexus_sync_spaces_deleted_total",
            "Spaces deleted.",
            self.spaces_deleted.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP nexus_sync_connections Open WebSocket sessions.\n\
             # TYPE nexus_sync_connections gauge\nnexus_sync_connections {}",
            self.connections.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP nexus_sync_errors_total Errors sent to clients, by code.\n\
             # TYPE nexus_sync_errors_total counter"
        );
        for (code, n) in CODES.iter().zip(&self.errors) {
            let code = serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "nexus_sync_errors_total{{code=\"{code}\"}} {}",
                n.load(Relaxed)
            );
        }
        let name = "nexus_sync_relay_latency_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time from receiving a write to sending it to a subscriber.\n\
             # TYPE {name} histogram"
        );
        for (b, n) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {}", n.load(Relaxed));
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count {count}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.pushes.fetch_add(3, Relaxed);
        m.error(ErrorCode::RateLimited);
        m.error(ErrorCode::Gone);
        m.docs_deleted.fetch_add(2, Relaxed);
        m.relay(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("nexus_sync_pushes_total 3\n"), "{text}");
        assert!(text.contains("nexus_sync_errors_total{code=\"rate_limited\"} 1\n"));
        assert!(text.contains("nexus_sync_errors_total{code=\"gone\"} 1\n"));
        assert!(text.contains("nexus_sync_docs_deleted_total 2\n"), "{text}");
        assert!(text.contains("nexus_sync_relay_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("nexus_sync_relay_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("nexus_sync_relay_latency_seconds_count 1\n"));
    }
}
