//! The key/value cache and causal softmax attention over it.
//!
//! Keys are stored in chunks of [`KEY_CHUNK`] positions, transposed inside a chunk
//! (`[chunk][head_dim][KEY_CHUNK]`): the scores of 16 positions are then 16-wide multiply-adds
//! of one broadcast query value per dimension, with no horizontal reduction. Values stay
//! row-major (`[position][head_dim]`) and are accumulated 16 dimensions at a time in registers.
//! The softmax is computed online over blocks of 64 positions, so no scratch memory is needed
//! at any context length.
//!
//! [`attend`] is plain Rust written to vectorize; `simd::attend` compiles it for AVX-512 and
//! AVX2 and picks one at run time.

use super::simd::exp_approx;

/// Positions per transposed key chunk.
pub(crate) const KEY_CHUNK: usize = 16;

/// Largest supported head dimension (bounds a stack buffer).
pub(crate) const MAX_HEAD_DIM: usize = 512;

/// Positions per online-softmax block (scored together, 4 key chunks).
const BLOCK: usize = 4 * KEY_CHUNK;

/// f32 keys and values of every layer and key/value head, for the whole context.
pub(crate) struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    heads: usize,
    hd: usize,
    /// Floats per (layer, head): the context rounded up to whole blocks, times `hd`.
    head_stride: usize,
}

impl KvCache {
    /// A zeroed cache (the allocation is lazily committed by the OS as positions are written).
    pub(crate) fn new(layers: usize, heads: usize, context: usize, hd: usize) -> Self {
        let head_stride = context.div_ceil(BLOCK) * BLOCK * hd;
        let len = layers * heads * head_stride;
        Self {
            k: vec![0.0; len],
            v: vec![0.0; len],
            heads,
            hd,
            head_stride,
        }
    }

    fn base(&self, layer: usize, head: usize) -> usize {
        (layer * self.heads + head) * self.head_stride
    }

    /// Writes the key and value of one position.
    pub(crate) fn store(&mut self, layer: usize, head: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (base, hd) = (self.base(layer, head), self.hd);
        let chunk = base + pos / KEY_CHUNK * KEY_CHUNK * hd;
        let j = pos % KEY_CHUNK;
        for (d, &x) in k[..hd].iter().enumerate() {
            self.k[chunk + d * KEY_CHUNK + j] = x;
        }
        self.v[base + pos * hd..base + (pos + 1) * hd].copy_from_slice(&v[..hd]);
    }

    /// Keys (whole blocks) and values of positions `0..len` of one layer and head.
    pub(crate) fn head(&self, layer: usize, head: usize, len: usize) -> (&[f32], &[f32]) {
        let (base, hd) = (self.base(layer, head), self.hd);
        let keys = &self.k[base..base + len.div_ceil(BLOCK) * BLOCK * hd];
        (keys, &self.v[base..base + len * hd])
    }
}

/// Softmax attention of one query head over `len` cached positions: `out = softmax(q . K^T *
/// scale) V`. `keys` must cover `len` positions in whole blocks of 64, `values` `len` rows;
/// positions of the last block beyond `len` are ignored (whatever they hold).
#[inline(always)]
pub(crate) fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(
        hd <= MAX_HEAD_DIM
            && out.len() == hd
            && keys.len() >= len.div_ceil(BLOCK) * BLOCK * hd
            && values.len() >= len * hd,
        "attend: bad shapes"
    );
    let mut qs = [0f32; MAX_HEAD_DIM];
    for (s, &x) in qs.iter_mut().zip(q) {
        *s = x * scale;
    }
    let qs = &qs[..hd];
    out.fill(0.0);
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
    let mut start = 0;
    while start < len {
        let n = (len - start).min(BLOCK);
        // Scores of the 4 key chunks of the block, one broadcast query value per dimension.
        let chunks = &keys[start * hd..(start + BLOCK) * hd];
        let (c0, rest) = chunks.split_at(KEY_CHUNK * hd);
        let (c1, rest) = rest.split_at(KEY_CHUNK * hd);
        let (c2, c3) = rest.split_at(KEY_CHUNK * hd);
        let (mut a0, mut a1, mut a2, mut a3) = (
            [0f32; KEY_CHUNK],
            [0f32; KEY_CHUNK],
            [0f32; KEY_CHUNK],
            [0f32; KEY_CHUNK],
        );
        let rows = c0
            .chunks_exact(KEY_CHUNK)
            .zip(c1.chunks_exact(KEY_CHUNK))
            .zip(c2.chunks_exact(KEY_CHUNK))
            .zip(c3.chunks_exact(KEY_CHUNK));
        for ((((r0, r1), r2), r3), &qd) in rows.zip(qs) {
            for i in 0..KEY_CHUNK {
                a0[i] = qd.mul_add(r0[i], a0[i]);
                a1[i] = qd.mul_add(r1[i], a1[i]);
                a2[i] = qd.mul_add(r2[i], a2[i]);
                a3[i] = qd.mul_add(r3[i], a3[i]);
            }
        }
        let acc = [a0, a1, a2, a3];
        let mut s = [f32::NEG_INFINITY; BLOCK];
        for (dst, a) in s.chunks_exact_mut(KEY_CHUNK).zip(&acc) {
            dst.copy_from_slice(a);
        }
        s[n..].fill(f32::NEG_INFINITY);
        let bmax = lane_max(&s);
        if bmax > max {
            let corr = exp_approx(max - bmax);
            if sum > 0.0 {
                for o in out.iter_mut() {
                    *o *= corr;
                }
            }
            sum *= corr;
            max = bmax;
        }
        let mut p = [0f32; BLOCK];
        for (p, &x) in p.iter_mut().zip(&s) {
            *p = exp_approx(x - max);
        }
        p[n..].fill(0.0);
        sum += lane_sum(&p);
        // out += p . V, 64 (then 16) dimensions at a time so the accumulators stay in registers.
        let vals = &values[start * hd..(start + n) * hd];
        let mut d0 = 0;
        while d0 + 64 <= hd {
            accumulate::<64>(&p[..n], vals, hd, &mut out[d0..d0 + 64], d0);
            d0 += 64;
        }
        while d0 + 16 <= hd {
            accumulate::<16>(&p[..n], vals, hd, &mut out[d0..d0 + 16], d0);
            d0 += 16;
        }
        if d0 < hd {
            for (&pj, row) in p[..n].iter().zip(vals.chunks_exact(hd)) {
                for (o, &v) in out[d0..].iter_mut().zip(&row[d0..]) {
                    *o = pj.mul_add(v, *o);
                }
            }
        }
        start += n;
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Maximum of a block, reduced lane-wise so it vectorizes.
#[inline(always)]
fn lane_max(x: &[f32; BLOCK]) -> f32 {
    let mut m = [f32::NEG_INFINITY; KEY_CHUNK];
    for c in x.chunks_exact(KEY_CHUNK) {
        for i in 0..KEY_CHUNK {
            m[i] = m[i].max(c[i]);
        }
    }
    m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Sum of a block, reduced lane-wise so it vectorizes.
#[inline(always)]
fn lane_sum(x: &[f32; BLOCK]) -> f32 {
    let mut s = [0f32; KEY_CHUNK];
    for c in x.chunks_exact(KEY_CHUNK) {
        for i in 0..KEY_CHUNK {
            s[i] += c[i];
        }
    }
    s.iter().sum()
}

/// `out[i] += sum_j p[j] * vals[j][d0 + i]` for `W` dimensions, accumulated in registers.
#[inline(always)]
fn accumulate<const W: usize>(p: &[f32], vals: &[f32], hd: usize, out: &mut [f32], d0: usize) {
    let mut acc = [0f32; W];
    acc.copy_from_slice(&out[..W]);
    for (&pj, row) in p.iter().zip(vals.chunks_exact(hd)) {
        let row = &row[d0..d0 + W];
        for i in 0..W {
            acc[i] = pj.mul_add(row[i], acc[i]);
        }
    }
    out[..W].copy_from_slice(&acc);
}
