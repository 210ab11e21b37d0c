//! Integer dot-product kernels with run-time ISA selection.
//!
//! [`Isa::detect`] picks, once, the best instruction set the CPU has:
//!
//! * [`Isa::Avx512`] (AVX-512 F/BW/VL + VNNI): two 32-value blocks per 512-bit register,
//!   `vpdpbusd` (unsigned weight codes x signed activation codes) for the block sums.
//! * [`Isa::Avx2`] (AVX2 + FMA + F16C): one block per 256-bit register, `vpmaddubsw` +
//!   `vpmaddwd` for the block sums (sign trick for 8-bit weights to avoid i16 saturation).
//! * [`Isa::Scalar`]: the portable reference in [`super::quant`], also used on aarch64.
//!
//! Block sums are exact integers in every path; the per-block scales are applied in f32, so the
//! paths differ from each other only by float summation order.
//!
//! The entry points ([`matmul`], [`quantize_rows`]) check every bound once, up front; the
//! `unsafe` blocks inside the kernels are raw loads and stores within those checked bounds.
#![allow(unsafe_code)]

use std::ops::Range;

use super::attention;
use super::quant::{ActShape, QActs, QK, QMatrix, quantize_row_scalar};

/// Instruction set used by the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (vectorized by the compiler where it can; the only kernels on aarch64).
    Scalar,
    /// x86-64 AVX2, FMA and F16C.
    Avx2,
    /// x86-64 AVX-512 F, BW, VL and VNNI (plus AVX2, FMA, F16C).
    Avx512,
}

impl Isa {
    /// The best instruction set of this CPU.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 = avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni");
            if avx512 {
                return Self::Avx512;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// Whether this CPU can run `self` (always true for [`Isa::Scalar`]).
    pub fn is_supported(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => matches!(Self::detect(), Self::Avx2 | Self::Avx512),
            Self::Avx512 => Self::detect() == Self::Avx512,
        }
    }
}

/// Rows handled together by the matrix kernels.
pub(crate) const TILE_ROWS: usize = 4;

/// Computes the dot products of rows `rows` of each matrix in `ws` (same shape) with the
/// activation rows `tokens` of `acts`, and hands them to `sink(t, r0, n, values)`: for token `t`,
/// rows `r0..r0 + n` (`n <= 4`), `values[m][i]` is the product of row `r0 + i` of `ws[m]`.
///
/// Panics if the shapes do not match or the ranges are out of bounds.
pub(crate) fn matmul<const M: usize, S>(
    isa: Isa,
    ws: [&QMatrix; M],
    rows: Range<usize>,
    acts: &QActs,
    tokens: Range<usize>,
    sink: &mut S,
) where
    S: FnMut(usize, usize, usize, [[f32; TILE_ROWS]; M]),
{
    for w in ws {
        assert!(
            w.rows() >= rows.end && w.cols() == acts.cols() && acts.rows() >= tokens.end,
            "matmul: shape mismatch"
        );
        assert_eq!(
            w.blocks() * QK,
            acts.padded_cols(),
            "matmul: padding mismatch"
        );
        assert_eq!(
            (w.kind(), w.cols()),
            (ws[0].kind(), ws[0].cols()),
            "matmul: mixed matrices"
        );
    }
    if rows.is_empty() || tokens.is_empty() {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only constructed after run-time detection of these features
        // (or checked with `is_supported` by tests), and the bounds were checked above.
        Isa::Avx512 => unsafe { x86::matmul_avx512(ws, rows, acts, tokens, sink) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above for AVX2 + FMA + F16C.
        Isa::Avx2 => unsafe { x86::matmul_avx2(ws, rows, acts, tokens, sink) },
        _ => matmul_scalar(ws, rows, acts, tokens, sink),
    }
}

fn matmul_scalar<const M: usize, S>(
    ws: [&QMatrix; M],
    rows: Range<usize>,
    acts: &QActs,
    tokens: Range<usize>,
    sink: &mut S,
) where
    S: FnMut(usize, usize, usize, [[f32; TILE_ROWS]; M]),
{
    for t in tokens {
        let mut r0 = rows.start;
        while r0 < rows.end {
            let n = (rows.end - r0).min(TILE_ROWS);
            let mut out = [[0f32; TILE_ROWS]; M];
            for (o, w) in out.iter_mut().zip(ws) {
                for (i, v) in o[..n].iter_mut().enumerate() {
                    *v = w.dot_portable(r0 + i, acts, t);
                }
            }
            sink(t, r0, n, out);
            r0 += n;
        }
    }
}

/// Quantizes rows of `x` (each `shape.cols` values, `x_stride` apart) into the activation rows
/// `dst` (a whole number of rows of that shape, e.g. from [`QActs::rows_mut`]).
pub(crate) fn quantize_rows(isa: Isa, x: &[f32], x_stride: usize, shape: ActShape, dst: &mut [u8]) {
    let ActShape {
        cols,
        kp,
        nb16,
        stride,
    } = shape;
    assert!(
        dst.len().is_multiple_of(stride),
        "quantize_rows: partial row"
    );
    for (t, row) in dst.chunks_exact_mut(stride).enumerate() {
        let src = &x[t * x_stride..t * x_stride + cols];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 + FMA were detected at run time (see `Isa::detect`).
            Isa::Avx2 | Isa::Avx512 => unsafe { x86::quantize_row_avx2(src, row, kp, nb16) },
            _ => quantize_row_scalar(src, row, kp, nb16),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::quant::{QActs, QK, QMatrix, WeightKind};
    use super::TILE_ROWS;

    /// [`attention::attend`] compiled for AVX-512.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) fn attend_avx512(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        len: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        super::attention::attend(q, keys, values, len, scale, out);
    }

    /// [`attention::attend`] compiled for AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn attend_avx2(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        len: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        super::attention::attend(q, keys, values, len, scale, out);
    }

    /// Rows ahead of the current tile whose weights are prefetched (the hardware prefetchers
    /// alone leave the first loads of every row waiting on memory).
    const PREFETCH_ROWS: usize = 16;

    /// Geometry shared by the tile kernels, read once per call.
    struct Geo {
        /// Code, scale and offset sections (see `QMatrix::sections`).
        codes: *const u8,
        d: *const u8,
        m: *const u8,
        code_stride: usize,
        nbp: usize,
        a: *const u8,
        a_stride: usize,
        a_scales: usize,
        a_count: usize,
    }

    impl Geo {
        fn new(w: &QMatrix, acts: &QActs) -> Self {
            let s = w.sections();
            Self {
                codes: s.codes,
                d: s.d,
                m: s.m,
                code_stride: w.codes_bytes(),
                nbp: w.blocks(),
                a: acts.data().as_ptr(),
                a_stride: acts.stride(),
                a_scales: acts.scales_offset(),
                a_count: acts.scale_count(),
            }
        }
    }

    /// Runs the tile kernel `$tile` over `rows x tokens`: 4x4 tiles, then 4x1, then 1x1.
    macro_rules! drive {
        ($ws:ident, $rows:ident, $acts:ident, $tokens:ident, $sink:ident, $tile:ident) => {{
            let geos: [Geo; M] = std::array::from_fn(|m| Geo::new($ws[m], $acts));
            let u8s: [bool; M] = std::array::from_fn(|m| $ws[m].kind() == WeightKind::U8);
            let mut r0 = $rows.start;
            while r0 < $rows.end {
                let n = ($rows.end - r0).min(TILE_ROWS);
                let mut t = $tokens.start;
                if n == TILE_ROWS {
                    for g in &geos {
                        prefetch_rows(g, r0 + PREFETCH_ROWS, TILE_ROWS);
                    }
                    while t + 4 <= $tokens.end {
                        let mut out = [[[0f32; TILE_ROWS]; M]; 4];
                        for m in 0..M {
                            let tile = if u8s[m] {
                                $tile::<true, 4, 4>(&geos[m], r0, t)
                            } else {
                                $tile::<false, 4, 4>(&geos[m], r0, t)
                            };
                            for c in 0..4 {
                                out[c][m] = tile[c];
                            }
                        }
                        for (c, o) in out.into_iter().enumerate() {
                            $sink(t + c, r0, n, o);
                        }
                        t += 4;
                    }
                    while t < $tokens.end {
                        let mut out = [[0f32; TILE_ROWS]; M];
                        for m in 0..M {
                            out[m] = if u8s[m] {
                                $tile::<true, 4, 1>(&geos[m], r0, t)[0]
                            } else {
                                $tile::<false, 4, 1>(&geos[m], r0, t)[0]
                            };
                        }
                        $sink(t, r0, n, out);
                        t += 1;
                    }
                } else {
                    while t < $tokens.end {
                        let mut out = [[0f32; TILE_ROWS]; M];
                        for m in 0..M {
                            for i in 0..n {
                                let v = if u8s[m] {
                                    $tile::<true, 1, 1>(&geos[m], r0 + i, t)[0][0]
                                } else {
                                    $tile::<false, 1, 1>(&geos[m], r0 + i, t)[0][0]
                                };
                                out[m][i] = v;
                            }
                        }
                        $sink(t, r0, n, out);
                        t += 1;
                    }
                }
                r0 += n;
            }
        }};
    }

    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C, and the caller must have
    /// checked the shapes and ranges as [`super::matmul`] does.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn matmul_avx512<const M: usize, S>(
        ws: [&QMatrix; M],
        rows: Range<usize>,
        acts: &QActs,
        tokens: Range<usize>,
        sink: &mut S,
    ) where
        S: FnMut(usize, usize, usize, [[f32; TILE_ROWS]; M]),
    {
        drive!(ws, rows, acts, tokens, sink, tile512);
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C, and the caller must have checked the shapes and
    /// ranges as [`super::matmul`] does.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn matmul_avx2<const M: usize, S>(
        ws: [&QMatrix; M],
        rows: Range<usize>,
        acts: &QActs,
        tokens: Range<usize>,
        sink: &mut S,
    ) where
        S: FnMut(usize, usize, usize, [[f32; TILE_ROWS]; M]),
    {
        drive!(ws, rows, acts, tokens, sink, tile256);
    }

    /// Prefetches the codes and scales of `n` rows from row `r` on into L1 (addresses past the
    /// matrix are harmless: prefetches never fault).
    #[inline]
    #[target_feature(enable = "sse")]
    fn prefetch_rows(g: &Geo, r: usize, n: usize) {
        let lines = |base: *const u8, stride: usize| {
            let start = base.wrapping_add(r * stride);
            let mut off = 0;
            while off < n * stride {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off).cast());
                off += 64;
            }
        };
        lines(g.codes, g.code_stride);
        lines(g.d, 2 * g.nbp);
        lines(g.m, 2 * g.nbp);
    }

    /// Dot products of rows `r0..r0+R` with activation rows `t0..t0+C`: `out[c][r]`.
    ///
    /// Per group of up to 16 blocks the combined scales `dw * da` are formed once per
    /// (row, token); each 2-block step then costs one load-and-unpack per row and one
    /// `vpdpbusd` + convert + scale-permute + FMA per (row, token).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn tile512<const U8: bool, const R: usize, const C: usize>(
        g: &Geo,
        r0: usize,
        t0: usize,
    ) -> [[f32; TILE_ROWS]; C] {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let nib = _mm512_set1_epi8(0x0f);
        let shifts = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
        let two = _mm512_set1_epi32(2);
        let minus128 = _mm512_set1_ps(-128.0);
        // SAFETY (all raw loads below): rows `r0..r0+R` of the matrix and rows `t0..t0+C` of the
        // activations exist (checked by `matmul`); every load stays inside its row of the
        // section (codes: `code_stride` bytes, scales: `2 * nbp` bytes, activation scales:
        // `a_count` f32 each for `d` and `s`), except masked scale loads, whose masked-off
        // lanes are not accessed.
        let wc: [*const u8; R] =
            std::array::from_fn(|r| g.codes.wrapping_add((r0 + r) * g.code_stride));
        let wd: [*const u8; R] = std::array::from_fn(|r| g.d.wrapping_add((r0 + r) * 2 * g.nbp));
        let wm: [*const u8; R] = std::array::from_fn(|r| g.m.wrapping_add((r0 + r) * 2 * g.nbp));
        let arow: [*const u8; C] = std::array::from_fn(|c| g.a.wrapping_add((t0 + c) * g.a_stride));
        let mut b0 = 0;
        while b0 < g.nbp {
            let nblk = (g.nbp - b0).min(16);
            let kmask: __mmask16 = if nblk == 16 {
                0xffff
            } else {
                (1u16 << nblk) - 1
            };
            let mut scale = [[_mm512_setzero_ps(); C]; R];
            for r in 0..R {
                // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                let dw = unsafe {
                    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(kmask, wd[r].add(2 * b0).cast()))
                };
                let mw = if U8 {
                    _mm512_mul_ps(dw, minus128)
                } else {
                    // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                    unsafe {
                        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(kmask, wm[r].add(2 * b0).cast()))
                    }
                };
                for c in 0..C {
                    // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                    let (da, sa) = unsafe {
                        let p = arow[c].add(g.a_scales).cast::<f32>().add(b0);
                        (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(g.a_count)))
                    };
                    scale[r][c] = _mm512_mul_ps(dw, da);
                    acc[r][c] = _mm512_fmadd_ps(mw, sa, acc[r][c]);
                }
            }
            let mut idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            let mut b = b0;
            while b < b0 + nblk {
                // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                let av: [__m512i; C] = std::array::from_fn(|c| unsafe {
                    _mm512_loadu_si512(arow[c].add(b * QK).cast())
                });
                for r in 0..R {
                    let wv = if U8 {
                        // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                        unsafe { _mm512_loadu_si512(wc[r].add(b * QK).cast()) }
                    } else {
                        let raw = unsafe { _mm256_loadu_si256(wc[r].add(b * QK / 2).cast()) };
                        let raw = _mm512_broadcast_i64x4(raw);
                        _mm512_and_si512(_mm512_srlv_epi16(raw, shifts), nib)
                    };
                    for c in 0..C {
                        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, av[c]);
                        let sc = _mm512_permutexvar_ps(idx, scale[r][c]);
                        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[r][c]);
                    }
                }
                idx = _mm512_add_epi32(idx, two);
                b += 2;
            }
            b0 += nblk;
        }
        let mut out = [[0f32; TILE_ROWS]; C];
        for r in 0..R {
            for c in 0..C {
                out[c][r] = _mm512_reduce_add_ps(acc[r][c]);
            }
        }
        out
    }

    /// AVX2 version of [`tile512`]: groups of 8 blocks, one block per register.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn tile256<const U8: bool, const R: usize, const C: usize>(
        g: &Geo,
        r0: usize,
        t0: usize,
    ) -> [[f32; TILE_ROWS]; C] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let nib = _mm256_set1_epi8(0x0f);
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        // SAFETY: as in `tile512`; scale loads of a partial group go through a zero-filled
        // stack copy instead of reading past the row.
        let wc: [*const u8; R] =
            std::array::from_fn(|r| g.codes.wrapping_add((r0 + r) * g.code_stride));
        let wd: [*const u8; R] = std::array::from_fn(|r| g.d.wrapping_add((r0 + r) * 2 * g.nbp));
        let wm: [*const u8; R] = std::array::from_fn(|r| g.m.wrapping_add((r0 + r) * 2 * g.nbp));
        let arow: [*const u8; C] = std::array::from_fn(|c| g.a.wrapping_add((t0 + c) * g.a_stride));
        let load_f16x8 = |p: *const u8, n: usize| -> __m256 {
            if n == 8 {
                // SAFETY: 8 f16 values inside the row (see above).
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
            } else {
                let mut buf = [0u8; 16];
                // SAFETY: `n` < 8 f16 values inside the row, copied into a 16-byte buffer.
                unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), 2 * n) };
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(buf.as_ptr().cast()) })
            }
        };
        let mut b0 = 0;
        while b0 < g.nbp {
            let nblk = (g.nbp - b0).min(8);
            let mut scale = [[_mm256_setzero_ps(); C]; R];
            for r in 0..R {
                let dw = load_f16x8(wd[r].wrapping_add(2 * b0), nblk);
                let mw = if U8 {
                    _mm256_setzero_ps()
                } else {
                    load_f16x8(wm[r].wrapping_add(2 * b0), nblk)
                };
                for c in 0..C {
                    // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                    let (da, sa) = unsafe {
                        let p = arow[c].add(g.a_scales).cast::<f32>().add(b0);
                        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(g.a_count)))
                    };
                    scale[r][c] = _mm256_mul_ps(dw, da);
                    if !U8 {
                        acc[r][c] = _mm256_fmadd_ps(mw, sa, acc[r][c]);
                    }
                }
            }
            let mut j = 0;
            while j < nblk {
                let b = b0 + j;
                // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                let a0: [__m256i; C] = std::array::from_fn(|c| unsafe {
                    _mm256_loadu_si256(arow[c].add(b * QK).cast())
                });
                // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                let a1: [__m256i; C] = std::array::from_fn(|c| unsafe {
                    _mm256_loadu_si256(arow[c].add((b + 1) * QK).cast())
                });
                let i0 = _mm256_set1_epi32(j as i32);
                let i1 = _mm256_set1_epi32(j as i32 + 1);
                for r in 0..R {
                    let (p0, p1): ([__m256i; C], [__m256i; C]) = if U8 {
                        // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                        let (x0, x1) = unsafe {
                            (
                                _mm256_xor_si256(
                                    _mm256_loadu_si256(wc[r].add(b * QK).cast()),
                                    flip,
                                ),
                                _mm256_xor_si256(
                                    _mm256_loadu_si256(wc[r].add((b + 1) * QK).cast()),
                                    flip,
                                ),
                            )
                        };
                        let (ax0, ax1) = (_mm256_abs_epi8(x0), _mm256_abs_epi8(x1));
                        (
                            std::array::from_fn(|c| {
                                _mm256_maddubs_epi16(ax0, _mm256_sign_epi8(a0[c], x0))
                            }),
                            std::array::from_fn(|c| {
                                _mm256_maddubs_epi16(ax1, _mm256_sign_epi8(a1[c], x1))
                            }),
                        )
                    } else {
                        // SAFETY: inside the rows checked by `matmul` (see the kernel comment).
                        let raw = unsafe { _mm256_loadu_si256(wc[r].add(b * QK / 2).cast()) };
                        let w0 = _mm256_and_si256(raw, nib);
                        let w1 = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nib);
                        (
                            std::array::from_fn(|c| _mm256_maddubs_epi16(w0, a0[c])),
                            std::array::from_fn(|c| _mm256_maddubs_epi16(w1, a1[c])),
                        )
                    };
                    for c in 0..C {
                        let s0 = _mm256_permutevar8x32_ps(scale[r][c], i0);
                        let s1 = _mm256_permutevar8x32_ps(scale[r][c], i1);
                        let d0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(p0[c], ones));
                        let d1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(p1[c], ones));
                        acc[r][c] = _mm256_fmadd_ps(d0, s0, acc[r][c]);
                        acc[r][c] = _mm256_fmadd_ps(d1, s1, acc[r][c]);
                    }
                }
                j += 2;
            }
            b0 += nblk;
        }
        let mut out = [[0f32; TILE_ROWS]; C];
        for r in 0..R {
            for c in 0..C {
                out[c][r] = hsum256(acc[r][c]);
            }
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// AVX2 version of [`super::super::quant::quantize_row_scalar`] (bit-identical output).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_row_avx2(x: &[f32], row: &mut [u8], kp: usize, nb16: usize) {
        assert!(x.len().is_multiple_of(QK) && x.len() <= kp && row.len() >= kp + 8 * nb16);
        let nb = x.len() / QK;
        let (codes, scales) = row.split_at_mut(kp);
        let (ds, ss) = scales.split_at_mut(4 * nb16);
        codes[nb * QK..].fill(0);
        ds[4 * nb..].fill(0);
        ss[4 * nb..4 * nb16].fill(0);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (b, (xb, cb)) in x
            .chunks_exact(QK)
            .zip(codes.chunks_exact_mut(QK))
            .enumerate()
        {
            // SAFETY: `xb` has 32 f32 values.
            let v: [__m256; 4] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * i)) });
            let m01 = _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask));
            let m23 = _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask));
            let m = _mm256_max_ps(m01, m23);
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let amax = _mm_cvtss_f32(m);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|i| {
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(v[i], id),
                );
                _mm256_cvtps_epi32(r)
            });
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256::<1>(sum),
            );
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            let isum = _mm_cvtsi128_si32(s);
            let p = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let p = _mm256_permutevar8x32_epi32(p, order);
            // SAFETY: `cb` has 32 bytes.
            unsafe { _mm256_storeu_si256(cb.as_mut_ptr().cast(), p) };
            ds[4 * b..4 * b + 4].copy_from_slice(&d.to_le_bytes());
            ss[4 * b..4 * b + 4].copy_from_slice(&(d * isum as f32).to_le_bytes());
        }
    }
}

/// Causal softmax attention of one query head, see [`attention::attend`]; `kv` is
/// `(keys, values, positions)` from `KvCache::head`.
pub(crate) fn attend(
    isa: Isa,
    q: &[f32],
    kv: (&[f32], &[f32], usize),
    scale: f32,
    out: &mut [f32],
) {
    let (keys, values, len) = kv;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` / `Isa::Avx2` are only used after run-time detection.
        Isa::Avx512 => unsafe { x86::attend_avx512(q, keys, values, len, scale, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::attend_avx2(q, keys, values, len, scale, out) },
        _ => attention::attend(q, keys, values, len, scale, out),
    }
}

/// `e^x` to about 1e-7 relative error (Cephes polynomial), written so loops over it vectorize.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    // ln 2 split in a part exact in f32 and the rest (Cody-Waite), then the Cephes expf
    // polynomial on [-ln2/2, ln2/2].
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_66)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    f32::from_bits((y.to_bits() as i32).wrapping_add(ni << 23) as u32)
}

/// `g[i] = silu(g[i]) * u[i]`.
pub(crate) fn silu_mul(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + exp_approx(-*g)) * u;
    }
}

/// Dot product of two f32 slices (8 independent accumulators so it vectorizes).
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
