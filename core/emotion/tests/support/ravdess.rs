//! The RAVDESS development subset and the prosody calibration protocol, shared by
//! `examples/calibrate_prosody.rs` and `tests/prosody_ravdess.rs` so both measure the same way.
//!
//! Protocol:
//! 1. Each WAV (48 kHz, 16-bit, mono) is converted to f32, resampled to 16 kHz with
//!    [`prosody::resample`] and summarised.
//! 2. Each actor's [`SpeakerBaseline`] is the median F0 and energy over all of that actor's clips,
//!    disgust included and labels unused (the live loop builds the same from a user's past
//!    speech); summaries are then made relative to it.
//! 3. Labels: high arousal = angry, happy, fearful, surprised; low = neutral, calm, sad;
//!    disgust is left out.
//! 4. Accuracy of high vs low (threshold 0.5) by leave-one-actor-out (train on one actor, test on
//!    the other, both ways, pooled) and leave-one-clip-out, refitting everything (standardisation
//!    included) on the training part only; plus the shipped model on all clips with and without
//!    baselines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nexus_emotion::prosody::{
    self, ArousalModel, Features, ProsodyReading, ProsodySummary, SpeakerBaseline, model,
};

/// L2 penalty of the calibration fit (fixed before looking at results; a strong prior for 26
/// examples).
pub const L2: f32 = 0.1;

/// One labelled clip.
#[derive(Debug, Clone)]
pub struct Clip {
    pub file: String,
    pub emotion: String,
    pub intensity: String,
    pub actor: String,
    /// Relative to the actor's baseline.
    pub summary: ProsodySummary,
}

impl Clip {
    /// `Some(true)` for high arousal, `Some(false)` for low, `None` for disgust (excluded).
    pub fn high_arousal(&self) -> Option<bool> {
        arousal_label(&self.emotion)
    }
}

/// A labelling of clips: `Some(true)` / `Some(false)` for the two classes, `None` to leave out.
pub type Label = fn(&Clip) -> Option<bool>;

/// High (true) vs low (false) arousal; disgust left out.
pub fn arousal(clip: &Clip) -> Option<bool> {
    arousal_label(&clip.emotion)
}

/// Among high-arousal clips only: pleasant (happy, surprised: true) vs unpleasant (angry,
/// fearful: false). Used to check whether prosody carries valence here (it barely does).
pub fn valence_among_high_arousal(clip: &Clip) -> Option<bool> {
    match clip.emotion.as_str() {
        "happy" | "surprised" => Some(true),
        "angry" | "fearful" => Some(false),
        _ => None,
    }
}

/// The arousal class of a RAVDESS emotion.
pub fn arousal_label(emotion: &str) -> Option<bool> {
    match emotion {
        "angry" | "happy" | "fearful" | "surprised" => Some(true),
        "neutral" | "calm" | "sad" => Some(false),
        _ => None,
    }
}

/// `NEXUS_RAVDESS_DIR`, else `shared/data/ravdess-dev` beside the repository.
pub fn default_dir() -> PathBuf {
    std::env::var_os("NEXUS_RAVDESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ravdess-dev")
        })
}

/// Loads and summarises every clip listed in `dir/labels.csv`.
pub fn load(dir: &Path) -> Result<Vec<Clip>, String> {
    let labels_path = dir.join("labels.csv");
    let labels = std::fs::read_to_string(&labels_path)
        .map_err(|e| format!("{}: {e}", labels_path.display()))?;
    let mut clips = Vec::new();
    for line in labels.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let [file, emotion, intensity, _statement, _repetition, actor, ..] = fields[..] else {
            return Err(format!("labels.csv: bad line {line:?}"));
        };
        let pcm = read_wav_16k(&dir.join("wav").join(file))?;
        clips.push(Clip {
            file: file.to_owned(),
            emotion: emotion.to_owned(),
            intensity: intensity.to_owned(),
            actor: actor.to_owned(),
            summary: prosody::analyze(&pcm, None).summary,
        });
    }
    apply_actor_baselines(&mut clips);
    Ok(clips)
}

/// A WAV file as 16 kHz mono f32.
pub fn read_wav_16k(path: &Path) -> Result<Vec<f32>, String> {
    let mut reader =
        hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!("{}: expected 16-bit PCM", path.display()));
    }
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let channels = usize::from(spec.channels.max(1));
    let mono: Vec<f32> = samples
        .chunks(channels)
        .map(|frame| frame.iter().map(|&s| f32::from(s) / 32_768.0).sum::<f32>() / channels as f32)
        .collect();
    prosody::resample(&mono, spec.sample_rate, prosody::SAMPLE_RATE).map_err(|e| e.to_string())
}

/// Each actor's baseline (label-free: median over all of the actor's clips).
pub fn actor_baselines(clips: &[Clip]) -> BTreeMap<String, Option<SpeakerBaseline>> {
    let mut by_actor: BTreeMap<String, Vec<ProsodySummary>> = BTreeMap::new();
    for clip in clips {
        by_actor
            .entry(clip.actor.clone())
            .or_default()
            .push(clip.summary.clone());
    }
    actor_baselines_of(&by_actor)
}

fn actor_baselines_of(
    by_actor: &BTreeMap<String, Vec<ProsodySummary>>,
) -> BTreeMap<String, Option<SpeakerBaseline>> {
    by_actor
        .iter()
        .map(|(actor, summaries)| (actor.clone(), SpeakerBaseline::from_summaries(summaries)))
        .collect()
}

fn apply_actor_baselines(clips: &mut [Clip]) {
    let mut by_actor: BTreeMap<String, Vec<ProsodySummary>> = BTreeMap::new();
    for clip in clips.iter() {
        by_actor
            .entry(clip.actor.clone())
            .or_default()
            .push(clip.summary.clone());
    }
    let baselines = actor_baselines_of(&by_actor);
    for clip in clips.iter_mut() {
        let baseline = baselines.get(&clip.actor).copied().flatten();
        clip.summary = clip.summary.clone().with_baseline(baseline.as_ref());
    }
}

/// Features and arousal labels of the labelled clips (disgust excluded).
pub fn examples<'a>(clips: impl IntoIterator<Item = &'a Clip>) -> Vec<(Features, bool)> {
    labelled(clips, arousal)
}

/// Features and labels under `label`.
pub fn labelled<'a>(
    clips: impl IntoIterator<Item = &'a Clip>,
    label: Label,
) -> Vec<(Features, bool)> {
    clips
        .into_iter()
        .filter_map(|c| Some((model::features(&c.summary), label(c)?)))
        .collect()
}

/// Correct / total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub correct: usize,
    pub total: usize,
}

impl Score {
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    fn add(&mut self, predicted_high: bool, high: bool) {
        self.total += 1;
        if predicted_high == high {
            self.correct += 1;
        }
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} = {:.1} %",
            self.correct,
            self.total,
            100.0 * self.accuracy()
        )
    }
}

/// Accuracy of `model` on the labelled clips.
pub fn score(model: &ArousalModel, clips: &[Clip]) -> Score {
    let mut score = Score::default();
    for (features, high) in examples(clips) {
        score.add(model.probability(&features) > 0.5, high);
    }
    score
}

/// Leave-one-actor-out for arousal: fit on all other actors, test on this one; pooled.
pub fn leave_one_actor_out(clips: &[Clip], l2: f32) -> Score {
    leave_one_actor_out_with(clips, l2, arousal)
}

/// Leave-one-actor-out under any labelling.
pub fn leave_one_actor_out_with(clips: &[Clip], l2: f32, label: Label) -> Score {
    let mut actors: Vec<&str> = clips.iter().map(|c| c.actor.as_str()).collect();
    actors.sort_unstable();
    actors.dedup();
    let mut total = Score::default();
    for actor in actors {
        let train = labelled(clips.iter().filter(|c| c.actor != actor), label);
        let Some(model) = ArousalModel::fit(&train, l2) else {
            continue;
        };
        for (features, high) in labelled(clips.iter().filter(|c| c.actor == actor), label) {
            total.add(model.probability(&features) > 0.5, high);
        }
    }
    total
}

/// Leave-one-clip-out for arousal over the labelled clips.
pub fn leave_one_out(clips: &[Clip], l2: f32) -> Score {
    leave_one_out_with(clips, l2, arousal)
}

/// Leave-one-clip-out under any labelling.
pub fn leave_one_out_with(clips: &[Clip], l2: f32, label: Label) -> Score {
    let all = labelled(clips, label);
    let mut total = Score::default();
    for (i, (features, high)) in all.iter().enumerate() {
        let train: Vec<(Features, bool)> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, e)| *e)
            .collect();
        if let Some(model) = ArousalModel::fit(&train, l2) {
            total.add(model.probability(features) > 0.5, *high);
        }
    }
    total
}

/// The shipped model on all labelled clips without speaker baselines.
pub fn shipped_without_baseline(clips: &[Clip]) -> Score {
    let plain: Vec<Clip> = clips
        .iter()
        .map(|c| Clip {
            summary: c.summary.clone().with_baseline(None),
            ..c.clone()
        })
        .collect();
    score(&ArousalModel::shipped(), &plain)
}

/// The shipped model's reading of a clip.
pub fn shipped_reading(clip: &Clip) -> ProsodyReading {
    ProsodyReading::from_summary(clip.summary.clone(), &ArousalModel::shipped())
}
