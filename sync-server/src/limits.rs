//! Rate limits: token buckets per connection (every frame) and per token (pushes and bytes,
//! shared by WebSocket and HTTP). Over a limit, a request fails with `rate_limited`; nothing
//! is written and the session stays open.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Limits, all configurable on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Frames per second per WebSocket connection.
    pub conn_rate: f64,
    /// Burst of frames per connection.
    pub conn_burst: f64,
    /// Pushes and snapshots per second per token.
    pub token_rate: f64,
    /// Burst of pushes per token.
    pub token_burst: f64,
    /// Blob bytes per second per token.
    pub token_bytes_rate: f64,
    /// Burst of blob bytes per token (at least one maximal snapshot).
    pub token_bytes_burst: f64,
    /// Open WebSocket sessions per server process; more are refused with 503.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            conn_rate: 200.0,
            conn_burst: 400.0,
            token_rate: 100.0,
            token_burst: 400.0,
            token_bytes_rate: 8.0 * 1024.0 * 1024.0,
            token_bytes_burst: 64.0 * 1024.0 * 1024.0,
            max_connections: 10_000,
        }
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if there are enough.
    pub fn take(&mut self, n: f64, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Per-token buckets (keyed by token hash).
#[derive(Debug, Default)]
pub struct TokenLimiter {
    buckets: Mutex<HashMap<String, (Bucket, Bucket)>>,
}

impl TokenLimiter {
    /// Charges one push of `bytes` to a token.
    pub fn allow(&self, limits: &Limits, token_hash: &str, bytes: usize) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            // Forget tokens idle long enough to be full again.
            let now = Instant::now();
            map.retain(|_, (b, _)| now.duration_since(b.last).as_secs_f64() < 60.0);
        }
        let (ops, byt) = map.entry(token_hash.to_owned()).or_insert_with(|| {
            (
                Bucket::full(limits.token_burst),
                Bucket::full(limits.token_bytes_burst),
            )
        });
        // Check both before taking from either.
        let mut ops2 = *ops;
        let mut byt2 = *byt;
        if ops2.take(1.0, limits.token_rate, limits.token_burst)
            && byt2.take(
                bytes as f64,
                limits.token_bytes_rate,
                limits.token_bytes_burst,
            )
        {
            *ops = ops2;
            *byt = byt2;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refuse() {
        let limits = Limits {
            token_rate: 0.001,
            token_burst: 3.0,
            ..Limits::default()
        };
        let l = TokenLimiter::default();
        assert!((0..3).all(|_| l.allow(&limits, "a", 10)));
        assert!(!l.allow(&limits, "a", 10));
        assert!(l.allow(&limits, "b", 10), "buckets are per token");
    }
}
