//! A small persistent thread pool for fork-join parallelism with sub-microsecond dispatch that
//! degrades gracefully when the machine is oversubscribed.
//!
//! A decode step of a small model runs ~150 parallel operations of a few microseconds each, so
//! the cost of handing work to threads matters as much as the arithmetic. The pool keeps
//! `threads - 1` workers alive; the calling thread always works too.
//!
//! * **Dynamic chunks.** A job is a number of chunks; every participating thread claims chunks
//!   from a shared counter until none are left, so an unlucky thread that is descheduled for a
//!   while does not hold the others back.
//! * **Late workers skip.** The caller publishes a job, works through the chunks, then *closes*
//!   the job and waits only for the workers that joined before the close (and are finishing a
//!   chunk). A worker that had not woken up in time never delays the caller. Without this, a
//!   fork-join on a busy 2-core machine waits a whole scheduler time slice whenever a worker is
//!   preempted, which turned a 5 ms decode step into 30-70 ms in our measurements.
//! * **Waiting.** Idle workers spin briefly, then yield, then park on a condition variable, so
//!   an idle model costs no CPU while back-to-back operations see spin latency only.
//! * **Soundness.** [`Pool::run`] does not return (not even by unwinding) before every joined
//!   worker is done with the job, which is what makes lending it a non-`'static` closure sound.
//!   A panic in a worker is caught and re-raised on the calling thread.
//!
//! On top of `run`, [`Pool::for_columns`] and [`Pool::for_rows2`] split mutable output buffers
//! into disjoint chunks, so callers never touch raw pointers.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it starts yielding, and yields before it parks.
const SPIN: Duration = Duration::from_micros(50);
const YIELD: Duration = Duration::from_millis(5);
/// How long the caller spins on a straggling worker before yielding its CPU.
const STRAGGLER_SPIN: Duration = Duration::from_micros(20);

/// Bit of [`Shared::state`] set while a job accepts new workers.
const OPEN: u64 = 1 << 31;
/// Low bits of [`Shared::state`]: number of workers that joined the current job.
const JOINED: u64 = OPEN - 1;

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// The current job and its chunk count; written by the caller before it publishes a new
    /// epoch in `state`, read by workers after they joined.
    job: UnsafeCell<(Option<Job>, usize)>,
    /// `epoch << 32 | OPEN | joined workers`.
    state: AtomicU64,
    /// Next chunk to claim.
    next: AtomicUsize,
    /// Joined workers that are done with the current job.
    finished: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by the single caller of `Pool::run` (which holds `&mut Pool`)
// while no worker can read it: before the epoch is published, and after the job was closed and
// every joined worker reported done. Workers read it only between joining and finishing.
unsafe impl Sync for Shared {}

/// A fixed set of worker threads; see the module documentation.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    epoch: u64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Pool {
    /// A pool of `threads` threads in total (the caller included; at least 1).
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new((None, 0)),
            state: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = Self {
            shared,
            workers: Vec::with_capacity(threads - 1),
            threads: 1,
            epoch: 0,
        };
        for index in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("nexus-native-{index}"))
                .spawn(move || worker(&shared))?;
            pool.workers.push(handle);
            pool.threads += 1;
        }
        Ok(pool)
    }

    /// Number of threads, the caller included.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(chunk)` for every chunk in `0..chunks`, each exactly once, spread over the
    /// threads, and returns when all calls have returned. A panic in any call is re-raised here
    /// after all threads are done with the job.
    pub(crate) fn run(&mut self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || chunks <= 1 {
            (0..chunks).for_each(f);
            return;
        }
        let shared = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: `Close` below
        // closes the job and waits (also while unwinding) until every worker that joined it is
        // done, then clears it; workers that did not join never read it. No worker reads `job`
        // before the state store below publishes it (release; workers join with acquire).
        unsafe {
            *shared.job.get() = (
                Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f)),
                chunks,
            );
        }
        shared.next.store(0, Ordering::Relaxed);
        shared.finished.store(0, Ordering::Relaxed);
        self.epoch = self.epoch.wrapping_add(1) & 0xffff_ffff;
        shared
            .state
            .store(self.epoch << 32 | OPEN, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }

        struct Close<'a>(&'a Shared);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                let joined = (self.0.state.fetch_and(!OPEN, Ordering::AcqRel) & JOINED) as usize;
                let start = Instant::now();
                let mut spins = 0u32;
                while self.0.finished.load(Ordering::Acquire) != joined {
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(64) && start.elapsed() > STRAGGLER_SPIN {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                // SAFETY: the job is closed and every worker that joined it is done
                // (acquire), and the next write happens in a later `run` (needs `&mut Pool`).
                unsafe { *self.0.job.get() = (None, 0) };
            }
        }
        let close = Close(shared);
        claim_chunks(shared, chunks, f);
        drop(close);
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a native inference worker thread panicked");
        }
    }

    /// Splits the columns of the row-major matrix `out` (`cols` values per row) into chunks
    /// whose widths are multiples of `align` (except the last one), and runs `f` on every chunk
    /// with exclusive access to it. Chunks are spread over the threads dynamically.
    pub(crate) fn for_columns<T: Send>(
        &mut self,
        out: &mut [T],
        cols: usize,
        align: usize,
        f: &(dyn Fn(&mut ColumnsMut<'_, T>) + Sync),
    ) {
        assert!(
            cols > 0 && out.len().is_multiple_of(cols),
            "for_columns: bad shape"
        );
        let rows = out.len() / cols;
        let width = self.chunk_len(cols, align);
        let ptr = SendPtr(out.as_mut_ptr());
        self.run(cols.div_ceil(width), &|chunk| {
            let range = chunk * width..((chunk + 1) * width).min(cols);
            let mut view = ColumnsMut {
                ptr: ptr.get(),
                stride: cols,
                rows,
                cols: range,
                _out: PhantomData,
            };
            f(&mut view);
        });
    }

    /// Splits `rows` rows of two buffers (`a_row` values per row of `a`, `b_row` of `b`) into
    /// chunks of consecutive rows and runs `f(range, a_rows, b_rows)` on every chunk.
    pub(crate) fn for_rows2<A: Send, B: Send>(
        &mut self,
        rows: usize,
        (a, a_row): (&mut [A], usize),
        (b, b_row): (&mut [B], usize),
        f: &RowsFn<'_, A, B>,
    ) {
        assert!(
            a.len() >= rows * a_row && b.len() >= rows * b_row,
            "for_rows2: short buffers"
        );
        let height = self.chunk_len(rows, 1);
        let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
        self.run(rows.div_ceil(height), &|chunk| {
            let range = chunk * height..((chunk + 1) * height).min(rows);
            // SAFETY: chunks are disjoint row ranges inside `0..rows`, every chunk is run once,
            // and both buffers hold at least `rows` rows and are exclusively borrowed here.
            let (sa, sb) = unsafe {
                (
                    std::slice::from_raw_parts_mut(
                        pa.get().add(range.start * a_row),
                        range.len() * a_row,
                    ),
                    std::slice::from_raw_parts_mut(
                        pb.get().add(range.start * b_row),
                        range.len() * b_row,
                    ),
                )
            };
            f(range, sa, sb);
        });
    }

    /// Chunk length for `len` items: about three chunks per thread (balance against
    /// stragglers at a small claiming cost), a multiple of `align`.
    fn chunk_len(&self, len: usize, align: usize) -> usize {
        let align = align.max(1);
        let chunks = 3 * self.threads;
        len.div_ceil(chunks).div_ceil(align).max(1) * align
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.state.fetch_add(1 << 32, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for handle in self.workers.drain(..) {
            // A worker never panics outside the caught job, so there is nothing to report.
            let _ = handle.join();
        }
    }
}

/// Claims and runs chunks until none are left.
fn claim_chunks(shared: &Shared, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
    loop {
        let chunk = shared.next.fetch_add(1, Ordering::Relaxed);
        if chunk >= chunks {
            return;
        }
        f(chunk);
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let state = wait_for_epoch(shared, seen);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = state >> 32;
        // Join the job unless it was closed already (then there is nothing left to do).
        let mut current = state;
        let joined = loop {
            if current >> 32 != seen || current & OPEN == 0 {
                break false;
            }
            match shared.state.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break true,
                Err(now) => current = now,
            }
        };
        if !joined {
            continue;
        }
        // SAFETY: we joined the job while it was open (acquire on the state written after the
        // job), and the caller keeps it alive until we increment `finished`.
        let (job, chunks) = unsafe { *shared.job.get() };
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| claim_chunks(shared, chunks, job))).is_err()
        {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.finished.fetch_add(1, Ordering::Release);
    }
}

/// Waits until the epoch in `state` differs from `seen`: spin, then yield, then park.
fn wait_for_epoch(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let state = shared.state.load(Ordering::Acquire);
        if state >> 32 != seen {
            return state;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(128) {
            std::hint::spin_loop();
            continue;
        }
        let idle = start.elapsed();
        if idle < SPIN {
            std::hint::spin_loop();
        } else if idle < YIELD {
            std::thread::yield_now();
        } else {
            let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            while shared.state.load(Ordering::SeqCst) >> 32 == seen {
                guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointer is only dereferenced through disjoint chunks handed out by `for_columns`
// / `for_rows2` while the underlying buffer is exclusively borrowed; `T: Send` is required there.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above; sharing the pointer value itself is harmless.
unsafe impl<T> Sync for SendPtr<T> {}

/// The per-chunk function of [`Pool::for_rows2`].
pub(crate) type RowsFn<'a, A, B> = dyn Fn(Range<usize>, &mut [A], &mut [B]) + Sync + 'a;

/// Exclusive access to a range of columns of a row-major matrix, handed out by
/// [`Pool::for_columns`].
pub(crate) struct ColumnsMut<'a, T> {
    ptr: *mut T,
    stride: usize,
    rows: usize,
    cols: Range<usize>,
    _out: PhantomData<&'a mut [T]>,
}

impl<T> ColumnsMut<'_, T> {
    /// The columns this view covers.
    pub(crate) fn cols(&self) -> Range<usize> {
        self.cols.clone()
    }

    /// Row `r` restricted to this view's columns (index 0 is column `cols().start`).
    pub(crate) fn row(&mut self, r: usize) -> &mut [T] {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        // SAFETY: the matrix has `rows * stride` elements and `cols` lies inside `0..stride`
        // (built by `for_columns`), so the slice is in bounds. Views of different chunks cover
        // disjoint columns, and `&mut self` prevents two live slices of this view.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(r * self.stride + self.cols.start),
                self.cols.len(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_once() {
        for threads in 1..4 {
            let mut pool = Pool::new(threads).expect("pool");
            for (len, align) in [(1, 1), (5, 4), (64, 16), (576, 16), (960, 16), (1000, 64)] {
                let width = pool.chunk_len(len, align);
                assert_eq!(width % align, 0);
                let hits: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
                pool.run(len.div_ceil(width), &|c| {
                    for h in &hits[c * width..((c + 1) * width).min(len)] {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn columns_and_rows_are_written_once() {
        for threads in 1..4 {
            let mut pool = Pool::new(threads).expect("pool");
            let mut m = vec![0u32; 7 * 37];
            for _ in 0..100 {
                pool.for_columns(&mut m, 37, 4, &|v| {
                    for r in 0..7 {
                        let cols = v.cols();
                        for (c, x) in cols.zip(v.row(r).iter_mut()) {
                            *x += (r * 37 + c) as u32;
                        }
                    }
                });
            }
            for (i, x) in m.iter().enumerate() {
                assert_eq!(*x, 100 * i as u32);
            }
            let (mut a, mut b) = (vec![0u8; 10 * 3], vec![0u16; 10 * 2]);
            pool.for_rows2(10, (&mut a, 3), (&mut b, 2), &|range, a, b| {
                for (k, r) in range.enumerate() {
                    a[3 * k..3 * k + 3].fill(r as u8);
                    b[2 * k..2 * k + 2].fill(r as u16);
                }
            });
            assert!(
                a.chunks(3)
                    .enumerate()
                    .all(|(r, c)| c.iter().all(|&x| x == r as u8))
            );
            assert!(
                b.chunks(2)
                    .enumerate()
                    .all(|(r, c)| c.iter().all(|&x| x == r as u16))
            );
        }
    }

    #[test]
    fn worker_panic_is_reraised_and_pool_survives() {
        let mut pool = Pool::new(2).expect("pool");
        for _ in 0..20 {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                pool.run(64, &|c| {
                    std::thread::sleep(Duration::from_micros(50));
                    assert!(c != 40, "boom");
                });
            }));
            assert!(caught.is_err());
        }
        let hits = AtomicUsize::new(0);
        pool.run(8, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn workers_help_and_wake_up_after_parking() {
        let mut pool = Pool::new(3).expect("pool");
        std::thread::sleep(YIELD + Duration::from_millis(20));
        let helpers = Mutex::new(std::collections::HashSet::new());
        for _ in 0..50 {
            pool.run(64, &|_| {
                std::thread::sleep(Duration::from_micros(100));
                helpers
                    .lock()
                    .expect("lock")
                    .insert(std::thread::current().id());
            });
        }
        assert!(
            helpers.lock().expect("lock").len() > 1,
            "no worker ever helped"
        );
    }

    #[test]
    fn many_tiny_jobs_complete() {
        let mut pool = Pool::new(2).expect("pool");
        let total = AtomicUsize::new(0);
        for _ in 0..20_000 {
            pool.run(3, &|c| {
                total.fetch_add(c + 1, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 20_000 * 6);
    }
}
