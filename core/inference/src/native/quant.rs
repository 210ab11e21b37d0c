//! Weight and activation formats of the native backend, their conversion from GGML blocks, and
//! the scalar reference kernels that every SIMD kernel is tested against.
//!
//! # Weights ([`QMatrix`])
//!
//! GGML quantizes a matrix row in blocks of 32 values with per-block scales. At load time every
//! supported GGML type is repacked into one of two layouts that the integer dot-product kernels
//! consume directly:
//!
//! * [`WeightKind::U4`] (from Q4_0 and Q4_1): 4-bit unsigned codes `u`, value `d * u + m`
//!   (Q4_0 becomes `m = -8 d`). Blocks are packed in pairs: byte `i` of a 32-byte pair holds
//!   element `i` of the even block in its low nibble and element `i` of the odd block in its
//!   high nibble, so one 32-byte load plus a shift and a mask yields two whole blocks in order.
//! * [`WeightKind::U8`] (from Q8_0): 8-bit codes biased by 128 (`u = q + 128`), value
//!   `d * (u - 128)`. Unsigned codes feed `vpdpbusd` (unsigned x signed) directly.
//!
//! A matrix is stored as three row-major sections: the codes (cache-line aligned, so with 576 or
//! 1536 columns every SIMD code load is aligned), then `d` (f16 per block), then `m` (f16 per
//! block, U4 only). A matrix-vector product streams each section linearly; the kernels prefetch
//! a few rows ahead in all three. The column count is padded to a multiple of 64 (an even number
//! of blocks) with zero blocks (`d = m = 0`), which keeps the SIMD loops free of odd tails; the
//! padding contributes exactly zero.
//!
//! # Activations ([`QActs`])
//!
//! Before a matrix product the f32 activations are quantized once per row to 8-bit blocks like
//! GGML's Q8_1: per block `d = max|x| / 127`, `q = round(x / d)` (ties to even), and the block sum
//! `s = d * sum(q)` that folds the weights' `m` offsets into one multiply per block:
//!
//! `dot(w, x) = sum_b dw_b * da_b * sum_i u_i q_i  +  mw_b * s_b`.

use crate::{InferenceError, Result};
use candle_core::quantized::GgmlDType;

/// Values per quantization block.
pub(crate) const QK: usize = 32;

/// Bytes added after every weight and activation buffer so that full-width SIMD loads near the
/// end of the last row never leave the allocation.
pub(crate) const TAIL_PAD: usize = 64;

/// Converts an IEEE half-precision bit pattern to f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man * 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Converts f32 to the nearest IEEE half-precision bit pattern (ties to even, overflow to inf).
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut r = m >> shift;
        let rem = m & ((1u32 << shift) - 1);
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    sign | r as u16
}

/// Reads the `i`-th little-endian u16 of `bytes`.
#[inline]
fn u16_at(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

/// Reads the `i`-th little-endian f32 of `bytes`.
#[inline]
fn f32_at(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

/// Code layout of a repacked weight matrix (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightKind {
    /// 4-bit codes, value `d * u + m`.
    U4,
    /// 8-bit codes biased by 128, value `d * (u - 128)`.
    U8,
}

/// Columns padded to the kernels' granularity (two blocks).
pub(crate) fn padded_cols(cols: usize) -> usize {
    cols.div_ceil(2 * QK) * 2 * QK
}

/// Alignment of the code section of a [`QMatrix`] (a cache line).
const ALIGN: usize = 64;

/// A quantized weight matrix in the native layout.
///
/// Storage: three sections in one buffer, each row-major: the codes (starting on a cache line,
/// so with 576 or 1536 columns every SIMD code load is aligned), then the `d` scales and, for
/// [`WeightKind::U4`], the `m` offsets (f16, one per block).
#[derive(Clone)]
pub(crate) struct QMatrix {
    kind: WeightKind,
    rows: usize,
    cols: usize,
    /// Blocks per row after padding (even).
    nbp: usize,
    buf: Vec<u8>,
    /// Offset of the code section in `buf` (aligned to [`ALIGN`]).
    start: usize,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("kind", &self.kind)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// One decoded GGML block: codes as stored in the native layout plus `d` and `m` (f16 bits).
struct Block {
    codes: [u8; QK],
    d: u16,
    m: u16,
}

/// Raw section pointers of a [`QMatrix`] for the SIMD kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Sections {
    pub(crate) codes: *const u8,
    pub(crate) d: *const u8,
    pub(crate) m: *const u8,
}

impl QMatrix {
    /// Repacks a GGML tensor with `rows` rows of `cols` values.
    pub(crate) fn from_ggml(
        name: &str,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self> {
        let (kind, block_bytes) = match dtype {
            GgmlDType::Q4_0 => (WeightKind::U4, 18),
            GgmlDType::Q4_1 => (WeightKind::U4, 20),
            GgmlDType::Q8_0 => (WeightKind::U8, 34),
            other => {
                return Err(InferenceError::Unsupported(format!(
                    "tensor {name} has type {other:?}; the native engine runs Q4_0, Q4_1 and Q8_0 \
                     matrices"
                )));
            }
        };
        if cols == 0 || !cols.is_multiple_of(QK) || rows == 0 {
            return Err(InferenceError::InvalidModel(format!(
                "tensor {name} has shape {rows}x{cols}"
            )));
        }
        let nb = cols / QK;
        if bytes.len() != rows * nb * block_bytes {
            return Err(InferenceError::InvalidModel(format!(
                "tensor {name}: {} bytes for {rows}x{cols} {dtype:?}",
                bytes.len()
            )));
        }
        let mut m = Self::zeroed(kind, rows, cols);
        let decode = |blk: &[u8]| -> Block {
            let mut codes = [0u8; QK];
            let d = u16::from_le_bytes([blk[0], blk[1]]);
            match dtype {
                GgmlDType::Q8_0 => {
                    for (c, &q) in codes.iter_mut().zip(&blk[2..2 + QK]) {
                        *c = q ^ 0x80;
                    }
                    Block { codes, d, m: 0 }
                }
                GgmlDType::Q4_1 => {
                    let mm = u16::from_le_bytes([blk[2], blk[3]]);
                    unpack_nibbles(&blk[4..20], &mut codes);
                    Block { codes, d, m: mm }
                }
                _ => {
                    unpack_nibbles(&blk[2..18], &mut codes);
                    Block {
                        codes,
                        d,
                        m: f32_to_f16(-8.0 * f16_to_f32(d)),
                    }
                }
            }
        };
        for r in 0..rows {
            let src = &bytes[r * nb * block_bytes..(r + 1) * nb * block_bytes];
            for b in 0..nb {
                m.set_block(r, b, &decode(&src[b * block_bytes..(b + 1) * block_bytes]));
            }
        }
        Ok(m)
    }

    /// Bytes of the three sections for `rows` rows.
    fn section_bytes(kind: WeightKind, rows: usize, nbp: usize) -> usize {
        let per_row = match kind {
            WeightKind::U4 => nbp * QK / 2 + 4 * nbp,
            WeightKind::U8 => nbp * QK + 2 * nbp,
        };
        rows * per_row
    }

    /// A matrix of zero blocks (padding codes included).
    fn zeroed(kind: WeightKind, rows: usize, cols: usize) -> Self {
        let nbp = padded_cols(cols) / QK;
        let len = Self::section_bytes(kind, rows, nbp);
        let buf = vec![0u8; len + ALIGN + TAIL_PAD];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let mut m = Self {
            kind,
            rows,
            cols,
            nbp,
            buf,
            start,
        };
        if kind == WeightKind::U8 {
            let n = m.codes_bytes() * rows;
            m.buf[start..start + n].fill(0x80);
        }
        m
    }

    fn d_offset(&self) -> usize {
        self.start + self.rows * self.codes_bytes()
    }

    fn m_offset(&self) -> usize {
        self.d_offset() + self.rows * 2 * self.nbp
    }

    fn set_block(&mut self, r: usize, b: usize, blk: &Block) {
        let (cb, i) = (self.codes_bytes(), r * self.nbp + b);
        let (d_at, m_at) = (self.d_offset() + 2 * i, self.m_offset() + 2 * i);
        let row = &mut self.buf[self.start + r * cb..self.start + (r + 1) * cb];
        match self.kind {
            WeightKind::U4 => {
                let pair = &mut row[(b / 2) * QK..(b / 2 + 1) * QK];
                let shift = if b.is_multiple_of(2) { 0 } else { 4 };
                let keep = if b.is_multiple_of(2) { 0xf0 } else { 0x0f };
                for (p, &c) in pair.iter_mut().zip(&blk.codes) {
                    *p = (*p & keep) | ((c & 0x0f) << shift);
                }
                self.buf[m_at..m_at + 2].copy_from_slice(&blk.m.to_le_bytes());
            }
            WeightKind::U8 => row[b * QK..(b + 1) * QK].copy_from_slice(&blk.codes),
        }
        self.buf[d_at..d_at + 2].copy_from_slice(&blk.d.to_le_bytes());
    }

    /// Stacks matrices with the same kind and column count into one (rows concatenated).
    pub(crate) fn vstack(parts: &[QMatrix]) -> Option<QMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut m = Self::zeroed(first.kind, rows, first.cols);
        let (mut codes, mut d, mut mm) = (m.start, m.d_offset(), m.m_offset());
        for p in parts {
            let n = p.rows * p.codes_bytes();
            m.buf[codes..codes + n].copy_from_slice(&p.buf[p.start..p.start + n]);
            codes += n;
            let n = p.rows * 2 * p.nbp;
            m.buf[d..d + n].copy_from_slice(&p.buf[p.d_offset()..p.d_offset() + n]);
            d += n;
            if p.kind == WeightKind::U4 {
                m.buf[mm..mm + n].copy_from_slice(&p.buf[p.m_offset()..p.m_offset() + n]);
                mm += n;
            }
        }
        Some(m)
    }

    pub(crate) fn kind(&self) -> WeightKind {
        self.kind
    }
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }
    /// Blocks per row after padding (always even).
    pub(crate) fn blocks(&self) -> usize {
        self.nbp
    }
    /// Bytes of codes per row.
    pub(crate) fn codes_bytes(&self) -> usize {
        match self.kind {
            WeightKind::U4 => self.nbp * QK / 2,
            WeightKind::U8 => self.nbp * QK,
        }
    }
    /// Section pointers for the SIMD kernels. Every section holds `rows` rows (codes:
    /// [`Self::codes_bytes`] per row, scales: `2 * blocks()` bytes per row); at least
    /// [`TAIL_PAD`] readable bytes follow the last section.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn sections(&self) -> Sections {
        let p = self.buf.as_ptr();
        Sections {
            codes: p.wrapping_add(self.start),
            d: p.wrapping_add(self.d_offset()),
            m: p.wrapping_add(self.m_offset()),
        }
    }

    /// Code `i` of block `b` of row `r`.
    #[inline]
    fn code(&self, r: usize, b: usize, i: usize) -> u8 {
        let row = &self.buf[self.start + r * self.codes_bytes()..];
        match self.kind {
            WeightKind::U4 => (row[(b / 2) * QK + i] >> (4 * (b % 2))) & 0x0f,
            WeightKind::U8 => row[b * QK + i],
        }
    }

    /// `(d, m)` of block `b` of row `r`, as f32.
    #[inline]
    fn scales(&self, r: usize, b: usize) -> (f32, f32) {
        let i = r * self.nbp + b;
        let d = f16_to_f32(u16_at(&self.buf[self.d_offset()..], i));
        let m = match self.kind {
            WeightKind::U4 => f16_to_f32(u16_at(&self.buf[self.m_offset()..], i)),
            WeightKind::U8 => -128.0 * d,
        };
        (d, m)
    }

    /// Dequantizes row `r` into `out` (`cols` values).
    pub(crate) fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (b, chunk) in out[..self.cols].chunks_exact_mut(QK).enumerate() {
            let (d, m) = self.scales(r, b);
            for (i, o) in chunk.iter_mut().enumerate() {
                *o = d * f32::from(self.code(r, b, i)) + m;
            }
        }
    }

    /// Portable dot product of row `r` with activation row `t` of `acts`: the same arithmetic
    /// as [`Self::dot_scalar`] in the same order (so bit-identical), but written over whole
    /// blocks so the compiler vectorizes it (NEON on aarch64, SSE2 on old x86).
    pub(crate) fn dot_portable(&self, r: usize, acts: &QActs, t: usize) -> f32 {
        let (nbp, cb) = (self.nbp, self.codes_bytes());
        let codes = &self.buf[self.start + r * cb..self.start + (r + 1) * cb];
        let d = &self.buf[self.d_offset() + r * 2 * nbp..][..2 * nbp];
        let a = acts.row(t);
        let mut sum = 0f32;
        match self.kind {
            WeightKind::U4 => {
                let m = &self.buf[self.m_offset() + r * 2 * nbp..][..2 * nbp];
                for (p, pair) in codes.chunks_exact(QK).enumerate() {
                    let q = &a.codes[2 * p * QK..(2 * p + 2) * QK];
                    let (q0, q1) = q.split_at(QK);
                    let (mut s0, mut s1) = (0i32, 0i32);
                    for i in 0..QK {
                        s0 += i32::from(pair[i] & 0x0f) * i32::from(q0[i] as i8);
                        s1 += i32::from(pair[i] >> 4) * i32::from(q1[i] as i8);
                    }
                    for (b, isum) in [(2 * p, s0), (2 * p + 1, s1)] {
                        let (dw, mw) = (f16_to_f32(u16_at(d, b)), f16_to_f32(u16_at(m, b)));
                        sum += dw * a.d(b) * isum as f32 + mw * a.s(b);
                    }
                }
            }
            WeightKind::U8 => {
                for (b, block) in codes.chunks_exact(QK).enumerate() {
                    let q = &a.codes[b * QK..(b + 1) * QK];
                    let mut isum = 0i32;
                    for i in 0..QK {
                        isum += (i32::from(block[i]) - 128) * i32::from(q[i] as i8);
                    }
                    sum += f16_to_f32(u16_at(d, b)) * a.d(b) * isum as f32;
                }
            }
        }
        sum
    }

    /// Scalar reference dot product of row `r` with activation row `t` of `acts`, written for
    /// obviousness; the tests check every other kernel against it.
    #[cfg(test)]
    pub(crate) fn dot_scalar(&self, r: usize, acts: &QActs, t: usize) -> f32 {
        let a = acts.row(t);
        let mut sum = 0f32;
        for b in 0..self.nbp {
            let (d, m) = self.scales(r, b);
            let qa = &a.codes[b * QK..(b + 1) * QK];
            match self.kind {
                WeightKind::U4 => {
                    let isum: i32 = (0..QK)
                        .map(|i| i32::from(self.code(r, b, i)) * i32::from(qa[i] as i8))
                        .sum();
                    sum += d * a.d(b) * isum as f32 + m * a.s(b);
                }
                WeightKind::U8 => {
                    let isum: i32 = (0..QK)
                        .map(|i| (i32::from(self.code(r, b, i)) - 128) * i32::from(qa[i] as i8))
                        .sum();
                    sum += d * a.d(b) * isum as f32;
                }
            }
        }
        sum
    }
}

fn unpack_nibbles(qs: &[u8], codes: &mut [u8; QK]) {
    for (i, &q) in qs.iter().enumerate() {
        codes[i] = q & 0x0f;
        codes[i + QK / 2] = q >> 4;
    }
}

/// Rows of 8-bit quantized activations (see the module documentation).
///
/// Row layout: `[codes: cols_p bytes][d: nb16 f32][s: nb16 f32]`, where `cols_p` is the padded
/// column count and `nb16` the padded block count rounded up to 16 (full-width scale loads).
#[derive(Debug, Clone)]
pub(crate) struct QActs {
    cols: usize,
    kp: usize,
    nb16: usize,
    stride: usize,
    rows: usize,
    data: Vec<u8>,
}

/// Geometry of [`QActs`] rows, for code that writes rows it borrowed mutably.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActShape {
    /// Values per row.
    pub(crate) cols: usize,
    /// Padded values per row (codes bytes).
    pub(crate) kp: usize,
    /// f32 slots of `d` and of `s`.
    pub(crate) nb16: usize,
    /// Bytes per row.
    pub(crate) stride: usize,
}

/// One row of [`QActs`].
pub(crate) struct ActRow<'a> {
    pub(crate) codes: &'a [u8],
    scales: &'a [u8],
    nb16: usize,
}

impl ActRow<'_> {
    /// Scale of block `b`.
    #[inline]
    pub(crate) fn d(&self, b: usize) -> f32 {
        f32_at(self.scales, b)
    }
    /// `d * sum(q)` of block `b`.
    #[inline]
    pub(crate) fn s(&self, b: usize) -> f32 {
        f32_at(self.scales, self.nb16 + b)
    }
}

impl QActs {
    /// Room for `rows` rows of `cols` values.
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        let kp = padded_cols(cols);
        let nb16 = (kp / QK).div_ceil(16) * 16;
        let stride = kp + 8 * nb16;
        Self {
            cols,
            kp,
            nb16,
            stride,
            rows,
            data: vec![0; rows * stride + TAIL_PAD],
        }
    }
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
    pub(crate) fn shape(&self) -> ActShape {
        ActShape {
            cols: self.cols,
            kp: self.kp,
            nb16: self.nb16,
            stride: self.stride,
        }
    }
    /// Padded columns (a multiple of 64).
    pub(crate) fn padded_cols(&self) -> usize {
        self.kp
    }
    /// Bytes per row.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }
    /// Offset of the f32 scales `d` inside a row (the sums `s` follow after `scale_count`).
    pub(crate) fn scales_offset(&self) -> usize {
        self.kp
    }
    /// Number of f32 slots of `d` (and of `s`) per row.
    pub(crate) fn scale_count(&self) -> usize {
        self.nb16
    }
    /// All rows followed by [`TAIL_PAD`] bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }
    /// Mutable bytes of all rows (for splitting across threads), without the tail padding.
    pub(crate) fn rows_mut(&mut self) -> &mut [u8] {
        let n = self.rows * self.stride;
        &mut self.data[..n]
    }
    pub(crate) fn row(&self, t: usize) -> ActRow<'_> {
        let row = &self.data[t * self.stride..(t + 1) * self.stride];
        ActRow {
            codes: &row[..self.kp],
            scales: &row[self.kp..],
            nb16: self.nb16,
        }
    }
}

/// Scalar reference quantization of `x` (`cols` values) into one activation row (`stride`
/// bytes, see [`QActs`]). Padding blocks are zeroed.
pub(crate) fn quantize_row_scalar(x: &[f32], row: &mut [u8], kp: usize, nb16: usize) {
    let (codes, scales) = row.split_at_mut(kp);
    let (ds, ss) = scales.split_at_mut(4 * nb16);
    codes.fill(0);
    ds.fill(0);
    ss.fill(0);
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (c, &v) in codes[b * QK..(b + 1) * QK].iter_mut().zip(xb) {
            let q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i32;
            sum += q;
            *c = q as i8 as u8;
        }
        ds[4 * b..4 * b + 4].copy_from_slice(&d.to_le_bytes());
        ss[4 * b..4 * b + 4].copy_from_slice(&(d * sum as f32).to_le_bytes());
    }
}

/// Converts an F32 or F16 vector tensor (norm weights) to f32.
pub(crate) fn vector_f32(
    name: &str,
    dtype: GgmlDType,
    bytes: &[u8],
    len: usize,
) -> Result<Vec<f32>> {
    let v: Vec<f32> = match dtype {
        GgmlDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(InferenceError::Unsupported(format!(
                "tensor {name} has type {other:?}; norm weights must be F32 or F16"
            )));
        }
    };
    if v.len() != len {
        return Err(InferenceError::InvalidModel(format!(
            "tensor {name} has {} values, expected {len}",
            v.len()
        )));
    }
    Ok(v)
}
