//! Emotion in the app: the text emotion model, the journal of readings and fused states, the
//! companion's mood and the tone guidance of each reply, daily and weekly summaries.
//!
//! On every [`Nexus::send`](crate::Nexus::send): the user's text is scored by the text emotion
//! model (when one is loaded, [`Nexus::set_text_emotion`]), fused with the recent readings of the
//! journal (heart rate, face, voice recorded by shells), the companion's mood responds, and the
//! tone guidance ([`nexus_companion::mood::tone_guidance`]) is added to the prompt (a system note right before the user's message). Once
//! the exchange is stored, the text reading (linked to the user's message) and the fused state
//! are added to the journal and the mood is saved. Emotion never makes a send fail: problems are
//! logged and the reply goes on without guidance.

use std::collections::BTreeMap;

use nexus_common::{CompanionId, ConversationId, JournalId, MessageId, Timestamp};
use nexus_companion::mood::{self, Mood};
use nexus_emotion::biometrics::HrReading;
use nexus_emotion::face::FaceReading;
use nexus_emotion::fusion::{FusedState, FusedStatus, FusionConfig, Source, SourceReading, fuse};
use nexus_emotion::prosody::ProsodyReading;
use nexus_emotion::text::{Ekman, NUM_EKMAN, TextEmotion, TextEmotionError, TextReading};
use nexus_store::{EmotionSource, JournalEntry, Role};
use serde::Serialize;
use serde_json::json;

use crate::{AppError, Nexus, Result};

/// What can go wrong with emotion in the app.
#[derive(Debug, thiserror::Error)]
pub enum EmotionAppError {
    /// No text emotion model is loaded.
    #[error("no text emotion model is loaded")]
    NoTextModel,
    /// The text emotion model failed.
    #[error(transparent)]
    Model(#[from] TextEmotionError),
}

/// Emotion state of a [`Nexus`]: the text model and the fusion settings.
#[derive(Debug, Default)]
pub struct EmotionState {
    text: Option<TextEmotion>,
    fusion: FusionConfig,
}

/// One reading of one signal, to record in the journal.
#[derive(Debug, Clone, Copy)]
pub enum Signal<'a> {
    /// A text reading.
    Text(&'a TextReading),
    /// A voice prosody reading.
    Voice(&'a ProsodyReading),
    /// A heart-rate window (observed at the window's end).
    Heart(&'a HrReading),
    /// A face reading.
    Face(&'a FaceReading),
}

/// What the emotion step before a reply found; completed by [`Nexus::finish_emotion`].
#[derive(Debug, Default)]
pub struct PendingEmotion {
    companion: Option<CompanionId>,
    at: Option<Timestamp>,
    text: Option<TextReading>,
    fused: Option<FusedState>,
    mood: Option<Mood>,
    guidance: Vec<String>,
}

impl PendingEmotion {
    /// The tone guidance lines for the reply (empty when nothing confident is known).
    pub fn guidance(&self) -> Vec<String> {
        self.guidance.clone()
    }

    /// The fused state of the user, if the step ran.
    pub fn fused(&self) -> Option<&FusedState> {
        self.fused.as_ref()
    }
}

fn ekman_pairs(scores: impl IntoIterator<Item = (Ekman, f32)>) -> Vec<(String, f32)> {
    let mut pairs: Vec<(String, f32)> = scores
        .into_iter()
        .map(|(g, s)| (g.name().to_owned(), unit(s)))
        .collect();
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    pairs
}

fn unit(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn ekman_of(name: &str) -> Option<Ekman> {
    Ekman::ALL.into_iter().find(|g| g.name() == name)
}

fn store_source(source: Source) -> EmotionSource {
    match source {
        Source::Text => EmotionSource::Text,
        Source::Voice => EmotionSource::Voice,
        Source::Heart => EmotionSource::Heart,
        Source::Face => EmotionSource::Face,
    }
}

impl Signal<'_> {
    /// The reading for fusion.
    pub fn source_reading(&self, at: Timestamp) -> SourceReading {
        match self {
            Signal::Text(r) => SourceReading::from_text(r, at.as_millis()),
            Signal::Voice(r) => SourceReading::from_prosody(r, at.as_millis()),
            Signal::Heart(r) => SourceReading::from_heart(r),
            Signal::Face(r) => SourceReading::from_face(r, at.as_millis()),
        }
    }

    /// The reading as a journal entry (labels and details in `docs/ARCHIVE.md`).
    pub fn journal_entry(
        &self,
        at: Timestamp,
        conversation_id: Option<ConversationId>,
        message_id: Option<MessageId>,
    ) -> JournalEntry {
        let reading = self.source_reading(at);
        let ekman = reading
            .ekman
            .map(|scores| ekman_pairs(Ekman::ALL.iter().map(|&g| (g, scores[g.index()]))));
        let (labels, details) = match self {
            Signal::Text(r) => {
                let mut labels: Vec<(String, f32)> = r
                    .labels
                    .iter()
                    .filter(|(_, p)| *p >= 0.05)
                    .take(10)
                    .map(|&(l, p)| (l.name().to_owned(), unit(p)))
                    .collect();
                if labels.is_empty()
                    && !r.flags.empty
                    && let Some(&(l, p)) = r.labels.first()
                {
                    labels.push((l.name().to_owned(), unit(p)));
                }
                let active: Vec<&str> = r.active.iter().map(|l| l.name()).collect();
                (
                    labels,
                    json!({"ekman": ekman, "active": active, "flags": r.flags}),
                )
            }
            Signal::Face(r) => (
                ekman.clone().unwrap_or_default(),
                json!({
                    "ekman": ekman,
                    "coverage": r.coverage,
                    "low_coverage": r.low_coverage,
                    "issues": {
                        "unknown": r.issues.unknown.len(),
                        "out_of_range": r.issues.out_of_range.len(),
                        "invalid": r.issues.invalid.len(),
                    },
                }),
            ),
            Signal::Voice(r) => (
                Vec::new(),
                json!({"arousal_probability": r.arousal_probability, "summary": r.summary}),
            ),
            Signal::Heart(r) => (
                Vec::new(),
                json!({"stats": r.stats, "arousal": r.arousal, "stress": r.stress,
                       "baseline": r.baseline}),
            ),
        };
        JournalEntry {
            id: JournalId::new(),
            at: Timestamp(reading.at_ms),
            source: store_source(reading.source),
            labels,
            valence: finite(reading.affect.valence, 0.0).clamp(-1.0, 1.0),
            arousal: finite(reading.affect.arousal, 0.0).clamp(0.0, 1.0),
            confidence: unit(reading.affect.confidence),
            conversation_id,
            message_id,
            details,
        }
    }
}

fn finite(x: f32, default: f32) -> f32 {
    if x.is_finite() { x } else { default }
}

/// A fused state as a journal entry.
pub fn fused_entry(
    state: &FusedState,
    conversation_id: Option<ConversationId>,
    message_id: Option<MessageId>,
) -> JournalEntry {
    JournalEntry {
        id: JournalId::new(),
        at: Timestamp(state.at_ms),
        source: EmotionSource::Fused,
        labels: ekman_pairs(state.ekman.iter().copied()),
        valence: state.valence,
        arousal: state.arousal,
        confidence: state.confidence,
        conversation_id,
        message_id,
        details: json!({
            "status": state.status,
            "disagreement": state.disagreement,
            "contributions": state.contributions,
        }),
    }
}

/// A stored reading back as a reading for fusion (`None` for fused states).
pub fn source_reading_of(entry: &JournalEntry) -> Option<SourceReading> {
    let source = match entry.source {
        EmotionSource::Text => Source::Text,
        EmotionSource::Voice => Source::Voice,
        EmotionSource::Heart => Source::Heart,
        EmotionSource::Face => Source::Face,
        EmotionSource::Fused => return None,
    };
    let ekman = entry
        .details
        .get("ekman")
        .and_then(|v| serde_json::from_value::<Vec<(String, f32)>>(v.clone()).ok())
        .map(|pairs| {
            let mut scores = [0.0f32; NUM_EKMAN];
            for (name, score) in pairs {
                if let Some(g) = ekman_of(&name) {
                    scores[g.index()] = score;
                }
            }
            scores
        });
    Some(SourceReading {
        source,
        at_ms: entry.at.as_millis(),
        affect: nexus_emotion::Affect {
            valence: entry.valence,
            arousal: entry.arousal,
            confidence: entry.confidence,
        },
        ekman,
    })
}

impl Nexus {
    /// Installs the text emotion model (scores the user's messages from now on).
    pub fn set_text_emotion(&mut self, model: TextEmotion) {
        self.emotion.text = Some(model);
    }

    /// Whether a text emotion model is installed.
    pub fn has_text_emotion(&self) -> bool {
        self.emotion.text.is_some()
    }

    /// Replaces the fusion settings.
    pub fn set_fusion_config(&mut self, config: FusionConfig) {
        self.emotion.fusion = config;
    }

    /// Scores texts with the text emotion model (one reading per text, in order).
    pub fn analyze_texts(&self, texts: &[&str]) -> Result<Vec<TextReading>> {
        let model = self
            .emotion
            .text
            .as_ref()
            .ok_or(EmotionAppError::NoTextModel)?;
        Ok(model.analyze(texts).map_err(EmotionAppError::from)?)
    }

    /// The user's state at `at` from the journal's readings of the last hour (fused states are
    /// not re-fused) and `extra` readings.
    pub fn fused_state_at(&self, at: Timestamp, extra: &[SourceReading]) -> Result<FusedState> {
        let config = &self.emotion.fusion;
        let recent = self.store.journal(
            at.plus_millis(-config.max_age_ms),
            at.plus_millis(config.future_tolerance_ms.max(0) + 1),
        )?;
        let mut readings: Vec<SourceReading> =
            recent.iter().filter_map(source_reading_of).collect();
        readings.extend_from_slice(extra);
        Ok(fuse(&readings, at.as_millis(), config))
    }

    /// Records a reading in the journal together with the fused state it leads to (unless there
    /// is no signal at all), optionally linked to a message. Returns the fused state.
    pub fn record_reading(
        &self,
        signal: Signal<'_>,
        at: Timestamp,
        link: Option<(ConversationId, MessageId)>,
    ) -> Result<FusedState> {
        let entry = signal.journal_entry(at, link.map(|l| l.0), link.map(|l| l.1));
        let fused = self.fused_state_at(entry.at, &[signal.source_reading(at)])?;
        let mut entries = vec![entry];
        if fused.status != FusedStatus::NoSignal {
            entries.push(fused_entry(&fused, link.map(|l| l.0), link.map(|l| l.1)));
        }
        self.store.add_journal_entries(&entries)?;
        Ok(fused)
    }

    /// The emotion step before a reply: score the text, fuse, let the mood respond, produce
    /// guidance. Never fails (problems are logged; the result is then empty).
    pub fn prepare_emotion(&self, conversation: ConversationId, text: &str) -> PendingEmotion {
        match self.try_prepare_emotion(conversation, text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("emotion: skipped before the reply: {e}");
                PendingEmotion::default()
            }
        }
    }

    fn try_prepare_emotion(
        &self,
        conversation: ConversationId,
        text: &str,
    ) -> Result<PendingEmotion> {
        let companion = self.store.conversation(conversation)?.companion_id;
        let now = self.clock.now();
        let text_reading = match &self.emotion.text {
            Some(model) if !text.trim().is_empty() => {
                model.analyze(&[text]).map_err(EmotionAppError::from)?.pop()
            }
            _ => None,
        };
        let extra: Vec<SourceReading> = text_reading
            .iter()
            .map(|r| SourceReading::from_text(r, now.as_millis()))
            .collect();
        let fused = self.fused_state_at(now, &extra)?;
        let mood = mood::load(&*self.store, companion, now)?.respond(&fused, now);
        let guidance = mood::tone_guidance(&fused, &mood);
        Ok(PendingEmotion {
            companion: Some(companion),
            at: Some(now),
            text: text_reading,
            fused: Some(fused),
            mood: Some(mood),
            guidance,
        })
    }

    /// The emotion step after a stored exchange: journal the text reading (linked to the user's
    /// message) and the fused state, save the mood. Never fails (problems are logged).
    pub fn finish_emotion(&self, pending: PendingEmotion, reply: &crate::Reply) {
        if let Err(e) = self.try_finish_emotion(pending, reply) {
            tracing::warn!("emotion: not recorded after the reply: {e}");
        }
    }

    fn try_finish_emotion(&self, pending: PendingEmotion, reply: &crate::Reply) -> Result<()> {
        let (Some(companion), Some(at), Some(fused), Some(mood)) =
            (pending.companion, pending.at, pending.fused, pending.mood)
        else {
            return Ok(());
        };
        let message = &reply.user_message;
        let link = (Some(message.conversation_id), Some(message.id));
        let mut entries = Vec::new();
        if let Some(text) = &pending.text {
            entries.push(Signal::Text(text).journal_entry(at, link.0, link.1));
        }
        if fused.status != FusedStatus::NoSignal {
            entries.push(fused_entry(&fused, link.0, link.1));
        }
        self.store.add_journal_entries(&entries)?;
        mood::save(&*self.store, companion, &mood)?;
        Ok(())
    }

    /// The companion's current mood (relaxed to now).
    pub fn companion_mood(&self, companion: CompanionId) -> Result<Mood> {
        let now = self.clock.now();
        Ok(mood::load(&*self.store, companion, now)?.relaxed(now))
    }

    /// The summary of today (UTC) or of the last 7 days, today included.
    pub fn journal_summary(&self, period: JournalPeriod) -> Result<JournalSummary> {
        let now = self.clock.now();
        let today = now.as_millis().div_euclid(DAY) * DAY;
        let days = match period {
            JournalPeriod::Day => 1,
            JournalPeriod::Week => 7,
        };
        let from = Timestamp(today - (days - 1) * DAY);
        let to = Timestamp(today + DAY);
        let entries = self.store.journal(from, to)?;
        let mut summary = summarize(&entries, from, days, period);
        summary.moments = self.moments(&entries)?;
        Ok(summary)
    }

    /// The strongest confident fused states (at most 5, strongest first) with the conversation
    /// around them.
    fn moments(&self, entries: &[JournalEntry]) -> Result<Vec<Moment>> {
        let mut strong: Vec<(f32, &JournalEntry)> = entries
            .iter()
            .filter(|e| e.source == EmotionSource::Fused && e.confidence >= MOMENT_CONFIDENCE)
            .filter_map(|e| {
                let emotion = e
                    .labels
                    .iter()
                    .find(|(l, _)| l != "neutral")
                    .map_or(0.0, |l| l.1);
                let strength = e.confidence * e.valence.abs().max(emotion);
                (strength >= MOMENT_STRENGTH).then_some((strength, e))
            })
            .collect();
        strong.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut cache: BTreeMap<ConversationId, Vec<nexus_store::Message>> = BTreeMap::new();
        let mut out = Vec::new();
        for (strength, e) in strong.into_iter().take(MAX_MOMENTS) {
            let (mut excerpt, mut topics) = (None, Vec::new());
            if let (Some(conv), Some(msg)) = (e.conversation_id, e.message_id) {
                if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(conv) {
                    // A deleted conversation leaves the link dead: no excerpt, no topics.
                    slot.insert(self.store.messages(conv, None).unwrap_or_default());
                }
                let messages = &cache[&conv];
                if let Some(i) = messages.iter().position(|m| m.id == msg) {
                    let around = &messages[i.saturating_sub(1)..(i + 2).min(messages.len())];
                    excerpt = Some(shorten(&messages[i].text, 100));
                    let texts: Vec<&str> = around
                        .iter()
                        .filter(|m| m.role == Role::User || m.id == msg)
                        .chain(around.iter().filter(|m| m.role == Role::Assistant))
                        .map(|m| m.text.as_str())
                        .collect();
                    topics = topics_of(&texts, 3);
                }
            }
            out.push(Moment {
                at: e.at,
                label: e
                    .labels
                    .iter()
                    .find(|(l, _)| l != "neutral")
                    .or(e.labels.first())
                    .map(|l| l.0.clone()),
                valence: e.valence,
                arousal: e.arousal,
                confidence: e.confidence,
                strength,
                excerpt,
                topics,
            });
        }
        Ok(out)
    }
}

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// Fused states below this confidence are not moments.
const MOMENT_CONFIDENCE: f32 = 0.45;
/// `confidence × max(|valence|, top non-neutral label)` a moment needs.
const MOMENT_STRENGTH: f32 = 0.3;
const MAX_MOMENTS: usize = 5;
/// A day's dominant emotion must have at least this share of the day's label mass, else the
/// day is neutral.
const DOMINANT_SHARE: f32 = 0.2;

/// Which summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalPeriod {
    /// Today (UTC).
    Day,
    /// The last 7 days (UTC), today included.
    Week,
}

/// Daily or weekly insights from the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalSummary {
    /// Which summary.
    pub period: JournalPeriod,
    /// Start (inclusive, UTC midnight).
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
    /// Readings per source (`text`, `voice`, `heart`, `face`) and fused states (`fused`).
    pub counts: BTreeMap<String, usize>,
    /// Emotions of the whole period with their share of the (confidence-weighted) label mass of
    /// the fused states, highest first.
    pub emotions: Vec<(String, f32)>,
    /// The most frequent emotion other than neutral (if it has at least 20 % of the mass), else
    /// `neutral`; `None` without labelled states.
    pub dominant: Option<String>,
    /// Confidence-weighted mean valence / arousal of the period's fused states.
    pub valence: Option<f32>,
    /// See `valence`.
    pub arousal: Option<f32>,
    /// Valence change per day (week) or per hour (day) by least squares over the buckets with
    /// data; `None` with fewer than 2 of them.
    pub valence_trend: Option<f32>,
    /// `rising`, `falling` or `steady` (|trend| under 0.05), or `None`.
    pub trend: Option<String>,
    /// Arousal change per bucket, like `valence_trend`.
    pub arousal_trend: Option<f32>,
    /// One bucket per day (week) or per hour (day), oldest first.
    pub buckets: Vec<Bucket>,
    /// Strong moments with the conversation topics around them.
    pub moments: Vec<Moment>,
}

/// One day (or hour) of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket.
    pub start: Timestamp,
    /// `YYYY-MM-DD` (days) or `HH:00` (hours), UTC.
    pub label: String,
    /// Fused states in it.
    pub states: usize,
    /// Dominant emotion (as in [`JournalSummary::dominant`]).
    pub dominant: Option<String>,
    /// Confidence-weighted mean valence.
    pub valence: Option<f32>,
    /// Confidence-weighted mean arousal.
    pub arousal: Option<f32>,
}

/// A strong moment of the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moment {
    /// When.
    pub at: Timestamp,
    /// Its strongest emotion other than neutral (else its top label).
    pub label: Option<String>,
    /// Valence.
    pub valence: f32,
    /// Arousal.
    pub arousal: f32,
    /// Confidence.
    pub confidence: f32,
    /// `confidence × max(|valence|, top non-neutral label)`.
    pub strength: f32,
    /// The beginning of the message it belongs to (if the conversation still exists).
    pub excerpt: Option<String>,
    /// Topics of the messages around it (most frequent content words).
    pub topics: Vec<String>,
}

/// Weighted label mass, valence and arousal of fused states.
#[derive(Default)]
struct Acc {
    states: usize,
    weight: f32,
    valence: f32,
    arousal: f32,
    labels: BTreeMap<String, f32>,
}

impl Acc {
    fn add(&mut self, e: &JournalEntry) {
        let w = e.confidence.max(0.01);
        self.states += 1;
        self.weight += w;
        self.valence += w * e.valence;
        self.arousal += w * e.arousal;
        for (l, s) in &e.labels {
            *self.labels.entry(l.clone()).or_default() += w * s;
        }
    }

    fn emotions(&self) -> Vec<(String, f32)> {
        let total: f32 = self.labels.values().sum();
        if total <= 0.0 {
            return Vec::new();
        }
        let mut v: Vec<(String, f32)> = self
            .labels
            .iter()
            .map(|(l, m)| (l.clone(), m / total))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    fn dominant(&self) -> Option<String> {
        let emotions = self.emotions();
        if emotions.is_empty() {
            return None;
        }
        Some(
            emotions
                .iter()
                .find(|(l, s)| l != "neutral" && *s >= DOMINANT_SHARE)
                .map_or_else(|| "neutral".to_owned(), |(l, _)| l.clone()),
        )
    }

    fn mean(&self, sum: f32) -> Option<f32> {
        (self.states > 0).then(|| sum / self.weight)
    }
}

fn summarize(
    entries: &[JournalEntry],
    from: Timestamp,
    days: i64,
    period: JournalPeriod,
) -> JournalSummary {
    let mut counts = BTreeMap::new();
    for e in entries {
        *counts.entry(e.source.as_str().to_owned()).or_insert(0) += 1;
    }
    let (size, n) = match period {
        JournalPeriod::Day => (HOUR, 24),
        JournalPeriod::Week => (DAY, days),
    };
    let mut all = Acc::default();
    let mut buckets: Vec<Acc> = (0..n).map(|_| Acc::default()).collect();
    for e in entries.iter().filter(|e| e.source == EmotionSource::Fused) {
        all.add(e);
        let i = (e.at.as_millis() - from.as_millis()).div_euclid(size);
        if let Some(b) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) {
            b.add(e);
        }
    }
    let buckets: Vec<Bucket> = buckets
        .iter()
        .enumerate()
        .map(|(i, acc)| {
            let start = Timestamp(from.as_millis() + i as i64 * size);
            let text = start.to_string();
            let label = match period {
                JournalPeriod::Day => format!("{}:00", &text[11..13]),
                JournalPeriod::Week => text[..10].to_owned(),
            };
            Bucket {
                start,
                label,
                states: acc.states,
                dominant: acc.dominant(),
                valence: acc.mean(acc.valence),
                arousal: acc.mean(acc.arousal),
            }
        })
        .collect();
    let points: Vec<(f32, f32)> = buckets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((i as f32, b.valence?)))
        .collect();
    let valence_trend = slope(&points);
    let arousal_points: Vec<(f32, f32)> = buckets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((i as f32, b.arousal?)))
        .collect();
    JournalSummary {
        period,
        from,
        to: Timestamp(from.as_millis() + days * DAY),
        counts,
        emotions: all.emotions(),
        dominant: all.dominant(),
        valence: all.mean(all.valence),
        arousal: all.mean(all.arousal),
        valence_trend,
        trend: valence_trend.map(|t| {
            if t > 0.05 {
                "rising"
            } else if t < -0.05 {
                "falling"
            } else {
                "steady"
            }
            .to_owned()
        }),
        arousal_trend: slope(&arousal_points),
        buckets,
        moments: Vec::new(),
    }
}

/// Least-squares slope; `None` with fewer than 2 distinct x.
fn slope(points: &[(f32, f32)]) -> Option<f32> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f32;
    let mx = points.iter().map(|p| p.0).sum::<f32>() / n;
    let my = points.iter().map(|p| p.1).sum::<f32>() / n;
    let sxx: f32 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f32 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn shorten(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max_chars).collect();
    format!("{}…", cut.trim_end())
}

/// Words that say nothing about a topic.
const STOPWORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "always",
    "am",
    "an",
    "and",
    "any",
    "are",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "cannot",
    "could",
    "did",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "even",
    "ever",
    "every",
    "feel",
    "feeling",
    "feels",
    "felt",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "getting",
    "going",
    "gonna",
    "good",
    "got",
    "had",
    "has",
    "have",
    "having",
    "hello",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "into",
    "its",
    "itself",
    "just",
    "know",
    "like",
    "little",
    "lot",
    "make",
    "many",
    "maybe",
    "more",
    "most",
    "much",
    "must",
    "myself",
    "need",
    "never",
    "nice",
    "not",
    "now",
    "off",
    "once",
    "only",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "really",
    "right",
    "said",
    "same",
    "say",
    "says",
    "see",
    "seem",
    "seems",
    "she",
    "should",
    "some",
    "something",
    "still",
    "such",
    "sure",
    "take",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "think",
    "this",
    "those",
    "through",
    "today",
    "too",
    "under",
    "until",
    "very",
    "want",
    "was",
    "way",
    "well",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "yeah",
    "yes",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The most frequent content words of `texts` (at least 4 letters, not stopwords), ties in order
/// of first appearance.
pub fn topics_of(texts: &[&str], max: usize) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for text in texts {
        for word in text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
            let word = word.trim_matches('\'').to_lowercase();
            let word = word.strip_suffix("'s").unwrap_or(&word).to_owned();
            if word.chars().count() < 4
                || word.chars().all(|c| c.is_numeric())
                || STOPWORDS.contains(&word.as_str())
                || word.contains('\'')
            {
                continue;
            }
            match counts.iter_mut().find(|(w, _)| *w == word) {
                Some((_, n)) => *n += 1,
                None => counts.push((word, 1)),
            }
        }
    }
    // Stable sort: equal counts keep the order of first appearance.
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.into_iter().take(max).map(|(w, _)| w).collect()
}

impl From<EmotionAppError> for AppError {
    fn from(e: EmotionAppError) -> Self {
        AppError::Emotion(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nexus_emotion::Affect;
    use nexus_store::{MemoryStore, Store};
    use nexus_testing::{FakeLlm, FixedClock};

    use super::*;
    use crate::Flow;

    const NOW: i64 = 1_763_700_000_000; // 2025-11-21 04:40 UTC

    fn app(store: Arc<MemoryStore>, clock: Arc<FixedClock>) -> Nexus {
        let mut app = Nexus::new(store, clock);
        app.set_language_model(Box::new(FakeLlm::new(&["Okay.", "Sure.", "Yes."])));
        app
    }

    fn face_like(at: i64, group: Ekman, v: f32, a: f32, c: f32) -> SourceReading {
        let mut scores = [0.02; NUM_EKMAN];
        scores[group.index()] = 0.9;
        SourceReading {
            source: Source::Face,
            at_ms: at,
            affect: Affect {
                valence: v,
                arousal: a,
                confidence: c,
            },
            ekman: Some(scores),
        }
    }

    fn record_source(
        app: &Nexus,
        reading: &SourceReading,
        link: Option<(ConversationId, MessageId)>,
    ) {
        let mut entry = fused_entry(
            &fuse(
                std::slice::from_ref(reading),
                reading.at_ms,
                &FusionConfig::default(),
            ),
            link.map(|l| l.0),
            link.map(|l| l.1),
        );
        entry.source = store_source(reading.source);
        entry.details = json!({"ekman": entry.labels.clone()});
        let fused = app
            .fused_state_at(entry.at, std::slice::from_ref(reading))
            .expect("fuse");
        app.store
            .add_journal_entries(&[
                entry,
                fused_entry(&fused, link.map(|l| l.0), link.map(|l| l.1)),
            ])
            .expect("record");
    }

    #[test]
    fn without_a_text_model_recorded_signals_still_guide_the_reply_and_are_journalled() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(FixedClock::at(NOW));
        let mut app = app(store.clone(), clock.clone());
        let c = app.companion_or_default(None).expect("companion");
        let conv = app.current_conversation(&c).expect("conversation");
        // Nothing known: no guidance, nothing journalled.
        app.send(conv.id, "hello", None, &mut |_| Flow::Continue)
            .expect("send");
        assert!(
            store
                .journal(Timestamp(0), Timestamp(i64::MAX))
                .expect("journal")
                .is_empty()
        );
        // A fearful face a moment ago: the next reply gets guidance for an anxious user.
        record_source(
            &app,
            &face_like(NOW - 1_000, Ekman::Fear, -0.7, 0.85, 0.9),
            None,
        );
        let reply = app
            .send(conv.id, "what now", None, &mut |_| Flow::Continue)
            .expect("send");
        let journal = store
            .journal(Timestamp(0), Timestamp(i64::MAX))
            .expect("journal");
        let last = journal.last().expect("a fused state for the message");
        assert_eq!(last.source, EmotionSource::Fused);
        assert_eq!(last.message_id, Some(reply.user_message.id));
        assert_eq!(last.labels[0].0, "fear");
        let mood = app.companion_mood(c.id).expect("mood");
        assert!(
            mood.valence < Mood::RESTING.0,
            "the mood responded: {mood:?}"
        );
        let key = mood::setting_key(c.id);
        assert!(store.setting(&key).expect("setting").is_some(), "saved");
        app.delete_companion(&c.name).expect("delete");
        assert_eq!(
            store.setting(&key).expect("setting"),
            None,
            "deleted with it"
        );
    }

    /// A FakeLlm the test can still read after handing it to the app.
    #[derive(Debug)]
    struct Shared(Arc<std::sync::Mutex<FakeLlm>>);

    impl crate::LanguageModel for Shared {
        fn context_length(&self) -> usize {
            2048
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count() + 1
        }
        fn generate(
            &mut self,
            request: &nexus_inference::GenerateRequest,
            on_text: &mut dyn FnMut(&str) -> Flow,
        ) -> nexus_inference::Result<nexus_inference::Generation> {
            let mut llm = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            llm.generate(request, on_text)
        }
    }

    #[test]
    fn guidance_reaches_the_prompt_of_send() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(FixedClock::at(NOW));
        let mut app = Nexus::new(store.clone(), clock.clone());
        let fake = Arc::new(std::sync::Mutex::new(FakeLlm::new(&["One.", "Two."])));
        app.set_language_model(Box::new(Shared(fake.clone())));
        let c = app.companion_or_default(None).expect("companion");
        let conv = app.current_conversation(&c).expect("conversation");
        app.send(conv.id, "hi", None, &mut |_| Flow::Continue)
            .expect("send");
        record_source(&app, &face_like(NOW, Ekman::Fear, -0.7, 0.85, 0.9), None);
        let pending = app.prepare_emotion(conv.id, "hi");
        assert_eq!(
            pending.fused().map(|f| f.status),
            Some(FusedStatus::Confident)
        );
        app.send(conv.id, "hi again", None, &mut |_| Flow::Continue)
            .expect("send");
        let requests = fake.lock().expect("lock").recorded();
        let prompt = |i: usize| {
            requests[i]
                .messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(!prompt(0).contains("The user seems"), "{}", prompt(0));
        assert!(
            prompt(1).contains("The user seems anxious"),
            "{}",
            prompt(1)
        );
        assert!(prompt(1).contains("No jokes"), "{}", prompt(1));
    }

    #[test]
    fn summaries_find_dominant_emotions_trends_and_moments_with_topics() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(FixedClock::at(NOW));
        let app = app(store.clone(), clock.clone());
        let c = app.companion_or_default(None).expect("companion");
        let conv = app.current_conversation(&c).expect("conversation");
        let today = NOW.div_euclid(DAY) * DAY;
        // Three days ago: happy; yesterday: mixed; today: a sad moment about an exam.
        record_source(
            &app,
            &face_like(today - 3 * DAY + HOUR, Ekman::Joy, 0.8, 0.6, 0.9),
            None,
        );
        record_source(
            &app,
            &face_like(today - DAY + HOUR, Ekman::Neutral, 0.0, 0.3, 0.9),
            None,
        );
        let msg = nexus_store::Message {
            id: MessageId::new(),
            conversation_id: conv.id,
            role: Role::User,
            text: "I failed my chemistry exam and my chemistry teacher was upset".into(),
            created_at: Timestamp(today + HOUR),
            token_count: 1,
        };
        store
            .append_messages(std::slice::from_ref(&msg))
            .expect("message");
        record_source(
            &app,
            &face_like(today + HOUR, Ekman::Sadness, -0.8, 0.3, 0.9),
            Some((conv.id, msg.id)),
        );
        let week = app.journal_summary(JournalPeriod::Week).expect("week");
        assert_eq!(week.buckets.len(), 7);
        assert_eq!(week.buckets[3].dominant.as_deref(), Some("joy"));
        assert_eq!(week.buckets[5].dominant.as_deref(), Some("neutral"));
        assert_eq!(week.buckets[6].dominant.as_deref(), Some("sadness"));
        assert_eq!(week.trend.as_deref(), Some("falling"));
        assert!(week.valence_trend.is_some_and(|t| t < -0.1), "{week:?}");
        assert!(week.arousal_trend.is_some_and(|t| t < 0.0), "{week:?}");
        assert_eq!(week.counts.get("fused"), Some(&3));
        assert_eq!(week.counts.get("face"), Some(&3));
        let m = &week.moments;
        assert!(!m.is_empty(), "{week:?}");
        let sad = m
            .iter()
            .find(|m| m.label.as_deref() == Some("sadness"))
            .expect("sad moment");
        assert_eq!(sad.topics.first().map(String::as_str), Some("chemistry"));
        assert!(sad.excerpt.as_deref().is_some_and(|e| e.contains("exam")));
        let day = app.journal_summary(JournalPeriod::Day).expect("day");
        assert_eq!(day.buckets.len(), 24);
        assert_eq!(day.buckets[1].label, "01:00");
        assert_eq!(day.dominant.as_deref(), Some("sadness"));
        assert_eq!(day.trend, None, "one hour with data");
    }

    #[test]
    fn an_empty_journal_gives_an_empty_summary() {
        let app = app(Arc::new(MemoryStore::new()), Arc::new(FixedClock::at(NOW)));
        let s = app.journal_summary(JournalPeriod::Week).expect("week");
        assert!(s.emotions.is_empty() && s.dominant.is_none() && s.moments.is_empty());
        assert!(
            s.buckets
                .iter()
                .all(|b| b.states == 0 && b.valence.is_none())
        );
        assert_eq!(s.trend, None);
    }

    #[test]
    fn topics_are_frequent_content_words() {
        assert_eq!(
            topics_of(
                &[
                    "My sister's wedding is Saturday",
                    "The wedding dress and my sister"
                ],
                3
            ),
            vec!["sister", "wedding", "saturday"]
        );
        assert!(topics_of(&["", "I am ok"], 3).is_empty());
    }
}
