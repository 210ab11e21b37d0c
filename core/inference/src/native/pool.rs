//! A small persistent thread pool for fork-join parallelism with sub-microsecond dispatch.
//!
//! A decode step of a small model runs ~150 parallel operations of a few microseconds each, so
//! the cost of handing work to threads matters more than anything else. The pool keeps
//! `threads - 1` workers alive; the calling thread is worker 0 and does its share of every job.
//!
//! * Dispatch: the job (a borrowed `&dyn Fn(usize)`) is published through an epoch counter
//!   (release/acquire); completion through a pending counter. No allocation, no lock.
//! * Waiting: workers spin (with `spin_loop` hints) for a short while after each job, then yield,
//!   then park on a condition variable, so an idle model costs no CPU while back-to-back
//!   operations see spin latency only.
//! * Safety: [`Pool::run`] does not return (not even by unwinding) before every worker is done
//!   with the job, which is what makes lending it a non-`'static` closure sound. A panic in a
//!   worker is caught and re-raised on the calling thread.
//!
//! On top of `run`, [`Pool::for_columns`] and [`Pool::for_rows2`] split mutable output buffers
//! into disjoint per-thread views, so callers never touch raw pointers.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it starts yielding, and yields before it parks.
const SPIN: Duration = Duration::from_micros(200);
const YIELD: Duration = Duration::from_millis(3);

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// The current job; written by the caller before it bumps `epoch`, read by workers after
    /// they observe the new epoch, cleared after `pending` dropped to zero.
    job: UnsafeCell<Option<Job>>,
    epoch: AtomicUsize,
    pending: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is only written by the single caller of `Pool::run` (which holds `&mut Pool`)
// while no worker reads it: before the epoch is published and after all workers reported done.
unsafe impl Sync for Shared {}

/// A fixed set of worker threads; see the module documentation.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
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
            job: UnsafeCell::new(None),
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
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
        };
        for index in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("nexus-native-{index}"))
                .spawn(move || worker(&shared, index))?;
            pool.workers.push(handle);
            pool.threads += 1;
        }
        Ok(pool)
    }

    /// Number of threads, the caller included.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every thread index `i` in `0..threads()` in parallel (index 0 on the
    /// calling thread) and returns when all calls have returned. A panic in any call is
    /// re-raised here after all threads are done.
    pub(crate) fn run(&mut self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let shared = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: `Done` below
        // waits (also while unwinding) until every worker has finished with the job and then
        // clears it, so no worker can observe the reference after `f` goes out of scope.
        // Workers do not read `job` before the epoch bump below (release/acquire).
        unsafe {
            *shared.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f));
        }
        shared.pending.store(self.threads - 1, Ordering::Relaxed);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }

        struct Done<'a>(&'a Shared);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let start = Instant::now();
                let mut spins = 0u32;
                while self.0.pending.load(Ordering::Acquire) != 0 {
                    spins = spins.wrapping_add(1);
                    if spins % 256 == 0 && start.elapsed() > SPIN {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                // SAFETY: all workers are done with the job (pending == 0, acquire), and the
                // next write happens in a later `run`, which needs `&mut Pool`.
                unsafe { *self.0.job.get() = None };
            }
        }
        let done = Done(shared);
        f(0);
        drop(done);
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a native inference worker thread panicked");
        }
    }

    /// Splits the columns of the row-major matrix `out` (`cols` values per row) into one
    /// contiguous range per thread, each a multiple of `align` columns (except the last), and
    /// runs `f` on every thread that got a non-empty range, with exclusive access to it.
    pub(crate) fn for_columns<T: Send>(
        &mut self,
        out: &mut [T],
        cols: usize,
        align: usize,
        f: &(dyn Fn(&mut ColumnsMut<'_, T>) + Sync),
    ) {
        assert!(cols > 0 && out.len() % cols == 0, "for_columns: bad shape");
        let rows = out.len() / cols;
        let n = self.threads;
        let ptr = SendPtr(out.as_mut_ptr());
        self.run(&|i| {
            let range = split(cols, align, n, i);
            if range.is_empty() {
                return;
            }
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
    /// one contiguous range per thread and runs `f(range, a_rows, b_rows)` on every thread that
    /// got a non-empty range.
    pub(crate) fn for_rows2<A: Send, B: Send>(
        &mut self,
        rows: usize,
        (a, a_row): (&mut [A], usize),
        (b, b_row): (&mut [B], usize),
        f: &(dyn Fn(Range<usize>, &mut [A], &mut [B]) + Sync),
    ) {
        assert!(
            a.len() >= rows * a_row && b.len() >= rows * b_row,
            "for_rows2: short buffers"
        );
        let n = self.threads;
        let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
        self.run(&|i| {
            let range = split(rows, 1, n, i);
            if range.is_empty() {
                return;
            }
            // SAFETY: `split` gives every thread a disjoint row range inside `0..rows`, and both
            // buffers hold at least `rows` rows and are exclusively borrowed for this call.
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
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
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

/// The part of `0..len` that thread `i` of `n` handles: contiguous, balanced, and a multiple of
/// `align` except for the last part.
pub(crate) fn split(len: usize, align: usize, n: usize, i: usize) -> Range<usize> {
    let align = align.max(1);
    let units = len.div_ceil(align);
    let start = (units * i / n * align).min(len);
    let end = (units * (i + 1) / n * align).min(len);
    start..end
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let epoch = wait_for_epoch(shared, seen);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = epoch;
        // SAFETY: the caller of `run` wrote the job before publishing `epoch` (acquired in
        // `wait_for_epoch`) and keeps it alive until this worker decrements `pending`.
        let job = unsafe { *shared.job.get() };
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| job(index))).is_err()
        {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the epoch differs from `seen`: spin, then yield, then park.
fn wait_for_epoch(shared: &Shared, seen: usize) -> usize {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let epoch = shared.epoch.load(Ordering::Acquire);
        if epoch != seen {
            return epoch;
        }
        spins = spins.wrapping_add(1);
        if spins % 256 != 0 {
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
            while shared.epoch.load(Ordering::SeqCst) == seen {
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
// SAFETY: the pointer is only dereferenced through disjoint views handed out by `for_columns` /
// `for_rows2` while the underlying buffer is exclusively borrowed; `T: Send` is required there.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above; sharing the pointer value itself is harmless.
unsafe impl<T> Sync for SendPtr<T> {}

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

    /// Number of rows of the matrix.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Row `r` restricted to this view's columns (index 0 is column `cols().start`).
    pub(crate) fn row(&mut self, r: usize) -> &mut [T] {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        // SAFETY: the matrix has `rows * stride` elements and `cols` lies inside `0..stride`
        // (checked in `for_columns` via `split`), so the slice is in bounds. Views of different
        // threads cover disjoint columns, and `&mut self` prevents two live slices of this view.
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
    fn split_covers_everything_once() {
        for len in [0, 1, 5, 64, 576, 960, 1000] {
            for align in [1, 4, 16, 64] {
                for n in 1..5 {
                    let mut next = 0;
                    for i in 0..n {
                        let r = split(len, align, n, i);
                        assert_eq!(r.start, next);
                        if i + 1 < n && !r.is_empty() {
                            assert_eq!(r.len() % align, 0);
                        }
                        next = r.end;
                    }
                    assert_eq!(next, len);
                }
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
                    for r in 0..v.rows() {
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
        let caught = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i| assert!(i != 1, "boom"));
        }));
        assert!(caught.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn parked_workers_wake_up() {
        let mut pool = Pool::new(3).expect("pool");
        std::thread::sleep(YIELD + Duration::from_millis(20));
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 3);
    }
}
