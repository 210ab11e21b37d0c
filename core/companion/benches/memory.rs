//! Recall over a large memory: `cargo bench -p nexus-companion --bench memory`.
//!
//! Builds a snapshot of N memories with unit-length 384-dim vectors (seeded pseudo-random, the
//! size of all-MiniLM-L6-v2 embeddings) and times `MemorySnapshot::recall_embedded` (int8 scan,
//! exact re-scoring, recency/importance scoring, token budget) for 1,000 queries on one thread.
//! Embedding the query is not included (see the Embeddings section of docs/BENCHMARKS.md).
//!
//! With `NEXUS_PY_REFERENCE=/path/to/python` (a venv with numpy and faiss-cpu), the same search
//! runs through `benches/recall_reference.py` (numpy brute force, FAISS exact and HNSW, one
//! thread) in the same run, for comparison.

use std::time::Instant;

use nexus_common::{CompanionId, MemoryId, Timestamp};
use nexus_companion::memory::{MemorySettings, MemorySnapshot, keywords_of};
use nexus_store::{MemoryItem, MemoryKind};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.next()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

fn main() {
    let dim = 384;
    let companion = CompanionId::new();
    let settings = MemorySettings::default();
    let count = |s: &str| s.split_whitespace().count() + 1;
    println!("| memories | search | build ms | recall p50 ms | p95 ms | p99 ms |");
    println!("|---:|---|---:|---:|---:|---:|");
    let sizes = [1_000usize, 10_000, 100_000];
    for n in sizes {
        let mut rng = Rng(42);
        let items: Vec<MemoryItem> = (0..n)
            .map(|i| MemoryItem {
                id: MemoryId::new(),
                companion_id: companion,
                text: format!("The user mentioned fact number {i} about their life."),
                kind: MemoryKind::Fact,
                subject: format!("s{i}"),
                importance: (i % 10) as f32 / 10.0,
                pinned: i % 997 == 0,
                embedding: rng.unit(dim),
                source_message_ids: Vec::new(),
                created_at: Timestamp(1_700_000_000_000 + i as i64 * 60_000),
                updated_at: Timestamp(1_700_000_000_000),
                last_used_at: None,
                superseded_by: None,
            })
            .collect();
        let t = Instant::now();
        let snapshot = MemorySnapshot::new(items, dim);
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        let queries: Vec<Vec<f32>> = (0..1000).map(|_| rng.unit(dim)).collect();
        // The real path also matches the query's content words against the shortlist.
        let keywords = keywords_of("Should I take my dog to the beach this weekend?");
        let now = Timestamp(1_700_000_000_000 + n as i64 * 60_000);
        let mut times: Vec<f64> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let r = snapshot.recall_embedded(q, &keywords, now, &settings, &count);
                std::hint::black_box(r);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "| {n} | Nexus (int8 scan + f32 re-score + scoring) | {build_ms:.0} | {:.2} | {:.2} | {:.2} |",
            pct(0.5),
            pct(0.95),
            pct(0.99)
        );
    }
    if let Ok(python) = std::env::var("NEXUS_PY_REFERENCE") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/recall_reference.py");
        let status = std::process::Command::new(python)
            .arg(script)
            .args(sizes.iter().map(usize::to_string))
            .env("OMP_NUM_THREADS", "1")
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("the Python reference failed: {status:?}");
        }
    }
}
