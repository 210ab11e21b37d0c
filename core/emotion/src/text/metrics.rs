//! Multi-label evaluation: per-label F1, macro-F1, and per-label decision thresholds.

/// Candidate thresholds searched by [`tune_thresholds`]: 0.02, 0.03, ... 0.95.
fn candidates() -> impl Iterator<Item = f32> {
    (2..=95).map(|i| i as f32 / 100.0)
}

/// F1 of one label: `scores[i][label] >= threshold` against `gold[i][label]`. A label with no
/// positive example and no positive prediction scores 0 (it cannot be measured).
pub fn f1_at(scores: &[Vec<f32>], gold: &[Vec<bool>], label: usize, threshold: f32) -> f32 {
    let (mut tp, mut fp, mut fneg) = (0u32, 0u32, 0u32);
    for (s, g) in scores.iter().zip(gold) {
        let pred = s.get(label).is_some_and(|&p| p >= threshold);
        let truth = g.get(label).copied().unwrap_or(false);
        match (pred, truth) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fneg;
    if denom == 0 {
        0.0
    } else {
        2.0 * tp as f32 / denom as f32
    }
}

/// Per-label F1 at the given thresholds.
pub fn per_label_f1(scores: &[Vec<f32>], gold: &[Vec<bool>], thresholds: &[f32]) -> Vec<f32> {
    thresholds
        .iter()
        .enumerate()
        .map(|(l, &t)| f1_at(scores, gold, l, t))
        .collect()
}

/// Unweighted mean of the per-label F1 at the given thresholds.
pub fn macro_f1(scores: &[Vec<f32>], gold: &[Vec<bool>], thresholds: &[f32]) -> f32 {
    let f = per_label_f1(scores, gold, thresholds);
    if f.is_empty() {
        0.0
    } else {
        f.iter().sum::<f32>() / f.len() as f32
    }
}

/// For every label, the threshold in 0.02..=0.95 that maximizes its F1 on `(scores, gold)`
/// (ties: the lowest threshold). `labels` is the number of labels.
pub fn tune_thresholds(scores: &[Vec<f32>], gold: &[Vec<bool>], labels: usize) -> Vec<f32> {
    (0..labels)
        .map(|l| {
            let mut best = (0.5f32, -1.0f32);
            for t in candidates() {
                let f = f1_at(scores, gold, l, t);
                if f > best.1 {
                    best = (t, f);
                }
            }
            best.0
        })
        .collect()
}

/// Micro-F1 (over every label decision) at the given thresholds.
pub fn micro_f1(scores: &[Vec<f32>], gold: &[Vec<bool>], thresholds: &[f32]) -> f32 {
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (s, g) in scores.iter().zip(gold) {
        for (l, &t) in thresholds.iter().enumerate() {
            let pred = s.get(l).is_some_and(|&p| p >= t);
            let truth = g.get(l).copied().unwrap_or(false);
            match (pred, truth) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                (false, false) => {}
            }
        }
    }
    let denom = 2 * tp + fp + fneg;
    if denom == 0 {
        0.0
    } else {
        2.0 * tp as f32 / denom as f32
    }
}

/// An honest estimate of macro-F1 when thresholds are tuned on the data that is scored: split
/// the rows into even and odd positions, tune on one half, score the other, and average both
/// directions.
pub fn cross_fitted_macro_f1(scores: &[Vec<f32>], gold: &[Vec<bool>], labels: usize) -> f32 {
    let half = |parity: usize| -> (Vec<Vec<f32>>, Vec<Vec<bool>>) {
        scores
            .iter()
            .zip(gold)
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, (s, g))| (s.clone(), g.clone()))
            .unzip()
    };
    let (s0, g0) = half(0);
    let (s1, g1) = half(1);
    let t0 = tune_thresholds(&s0, &g0, labels);
    let t1 = tune_thresholds(&s1, &g1, labels);
    (macro_f1(&s1, &g1, &t0) + macro_f1(&s0, &g0, &t1)) / 2.0
}

/// Pearson correlation of two equally long series (0 when either is constant or empty).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx.sqrt() * syy.sqrt())
    }
}
