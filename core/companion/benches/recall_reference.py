"""Reference for the memory recall benchmark: the same search as `benches/memory.rs` (top 48 by
cosine over N unit-length 384-dim float32 vectors, one query at a time, one thread) with the
tools a Python developer would pick: numpy brute force and FAISS `IndexFlatIP` (exact) and
`IndexHNSWFlat` (approximate, M=32, efSearch=64).

Usage: python recall_reference.py N [N ...]   (prints one markdown row per N and tool)
Needs numpy and faiss-cpu (`pip install numpy faiss-cpu` in a venv outside the repository).
"""

import sys
import time

import numpy as np

try:
    import faiss
except ImportError:  # numpy only
    faiss = None

DIM, K, QUERIES = 384, 48, 1000


def pct(times, p):
    s = sorted(times)
    return s[min(len(s) - 1, int(len(s) * p))]


def row(n, tool, build_ms, times):
    print(f"| {n} | {tool} | {build_ms:.0f} | {pct(times, 0.5):.2f} | {pct(times, 0.95):.2f} | {pct(times, 0.99):.2f} |")


def main():
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(42)
    for n in map(int, sys.argv[1:]):
        x = rng.standard_normal((n, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)

        times = []
        for v in q:
            t = time.perf_counter()
            s = x @ v
            top = np.argpartition(-s, K)[:K]
            top = top[np.argsort(-s[top])]
            times.append((time.perf_counter() - t) * 1e3)
        row(n, "numpy brute force (f32)", 0, times)

        if faiss is None:
            continue
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(DIM)
        flat.add(x)
        build = (time.perf_counter() - t) * 1e3
        times = []
        for v in q:
            t = time.perf_counter()
            flat.search(v[None, :], K)
            times.append((time.perf_counter() - t) * 1e3)
        row(n, "FAISS IndexFlatIP (exact)", build, times)

        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = 64
        hnsw.add(x)
        build = (time.perf_counter() - t) * 1e3
        times = []
        for v in q:
            t = time.perf_counter()
            hnsw.search(v[None, :], K)
            times.append((time.perf_counter() - t) * 1e3)
        row(n, "FAISS HNSW (approximate)", build, times)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
