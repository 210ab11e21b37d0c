//! The companion's own mood, and tone guidance for its replies.
//!
//! # Mood
//! A companion has a mood on the circumplex ([`Mood`]: valence −1..1, arousal 0..1), persisted
//! per companion as a setting ([`load`], [`save`]). It responds to the user's fused emotional
//! state ([`FusedState`]) with inertia, empathic but steadier ([`Mood::respond`]):
//! 1. between messages it relaxes towards its resting mood ([`Mood::RESTING`], slightly
//!    pleasant and calm) with a half-life of 6 hours;
//! 2. a confident user state pulls it towards a target halfway between the resting mood and
//!    the user's valence (it shares joy and sadness, less strongly), with an arousal that
//!    follows the user's only up to 0.6 (it does not get agitated with an angry or anxious
//!    user: it stays a calm presence);
//! 3. the pull is `0.35 × confidence` of the distance per message, so one message moves it
//!    a little and a sustained feeling moves it a lot. States that are not confident
//!    ([`FusedStatus::LowConfidence`], [`FusedStatus::NoSignal`]) leave it unchanged.
//!
//! # Tone guidance
//! [`tone_guidance`] turns the user's state and the mood into lines for the prompt: what
//! the user seems to feel, with the confidence, and how to answer (for an anxious user: calm,
//! gentle, short sentences, no jokes). Nothing when the state is not confident or is neutral
//! and unremarkable: guidance from a guess would do more harm than good.

use nexus_common::{CompanionId, Timestamp};
use nexus_emotion::fusion::{FusedState, FusedStatus};
use nexus_emotion::text::Ekman;
use nexus_store::Store;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Prefix of the setting that holds a companion's mood (`companion_mood:<companion id>`).
pub const MOOD_SETTING_PREFIX: &str = "companion_mood:";

/// Half-life of the relaxation towards the resting mood (ms): 6 hours.
const RELAX_HALF_LIFE_MS: f32 = 6.0 * 3_600_000.0;
/// Share of the distance to the target moved per confident message, at confidence 1.
const PULL: f32 = 0.35;
/// How far the target valence goes from the resting mood towards the user's (0..1).
const EMPATHY: f32 = 0.5;
/// The highest arousal the mood follows the user to.
const MAX_AROUSAL: f32 = 0.6;

/// A companion's mood.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mood {
    /// Unpleasant (-1) to pleasant (+1).
    pub valence: f32,
    /// Calm (0) to excited (1).
    pub arousal: f32,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Mood {
    /// Where a mood rests: slightly pleasant, calm.
    pub const RESTING: (f32, f32) = (0.3, 0.35);

    /// The resting mood at `at`.
    pub fn resting(at: Timestamp) -> Self {
        Self {
            valence: Self::RESTING.0,
            arousal: Self::RESTING.1,
            updated_at: at,
        }
    }

    /// The mood at `now` without news: relaxed towards the resting mood.
    pub fn relaxed(&self, now: Timestamp) -> Self {
        let elapsed = now
            .as_millis()
            .saturating_sub(self.updated_at.as_millis())
            .max(0);
        let keep = 0.5f32.powf(elapsed as f32 / RELAX_HALF_LIFE_MS);
        let (rv, ra) = Self::RESTING;
        Self {
            valence: rv + (self.valence - rv) * keep,
            arousal: ra + (self.arousal - ra) * keep,
            updated_at: now.max(self.updated_at),
        }
        .sanitized()
    }

    /// The mood after the user's state `user` at `now` (rules in the module docs).
    pub fn respond(&self, user: &FusedState, now: Timestamp) -> Self {
        let mood = self.relaxed(now);
        if user.status != FusedStatus::Confident {
            return mood;
        }
        let (rv, ra) = Self::RESTING;
        let target_v = rv + EMPATHY * (user.valence - rv);
        let target_a = ra + EMPATHY * (user.arousal.min(MAX_AROUSAL) - ra);
        let step = PULL * user.confidence.clamp(0.0, 1.0);
        Self {
            valence: mood.valence + step * (target_v - mood.valence),
            arousal: mood.arousal + step * (target_a - mood.arousal),
            updated_at: mood.updated_at,
        }
        .sanitized()
    }

    /// In range and finite (a damaged setting cannot produce a broken mood).
    fn sanitized(self) -> Self {
        let fix = |x: f32, lo: f32, hi: f32, default: f32| {
            if x.is_finite() {
                x.clamp(lo, hi)
            } else {
                default
            }
        };
        Self {
            valence: fix(self.valence, -1.0, 1.0, Self::RESTING.0),
            arousal: fix(self.arousal, 0.0, 1.0, Self::RESTING.1),
            updated_at: self.updated_at,
        }
    }

    /// A few words for the mood ("calm and content", "subdued", ...).
    pub fn describe(&self) -> &'static str {
        match (self.valence, self.arousal) {
            (v, a) if v >= 0.25 && a >= 0.5 => "cheerful and lively",
            (v, _) if v >= 0.25 => "calm and content",
            (v, a) if v <= -0.15 && a >= 0.5 => "concerned and attentive",
            (v, _) if v <= -0.15 => "subdued and soft",
            (_, a) if a >= 0.5 => "alert",
            _ => "calm",
        }
    }
}

/// The setting key of a companion's mood.
pub fn setting_key(companion: CompanionId) -> String {
    format!("{MOOD_SETTING_PREFIX}{companion}")
}

/// The companion's saved mood, or the resting mood at `now` if none was saved (or the saved
/// value cannot be read).
pub fn load(store: &dyn Store, companion: CompanionId, now: Timestamp) -> Result<Mood> {
    Ok(store
        .setting(&setting_key(companion))?
        .and_then(|json| serde_json::from_str::<Mood>(&json).ok())
        .map_or_else(|| Mood::resting(now), Mood::sanitized))
}

/// Saves the companion's mood.
pub fn save(store: &dyn Store, companion: CompanionId, mood: &Mood) -> Result<()> {
    let json = serde_json::to_string(&mood.sanitized())
        .map_err(|e| crate::CompanionError::Invalid(format!("mood: {e}")))?;
    Ok(store.set_setting(&setting_key(companion), &json)?)
}

/// How the user seems to feel, in words, and how to answer; `None` for neutral states.
fn reading_and_advice(user: &FusedState) -> Option<(String, &'static str)> {
    let emotion = user.dominant_emotion().filter(|&(_, p)| p >= 0.25);
    let (feeling, advice) = match emotion.map(|e| e.0) {
        Some(Ekman::Fear) => (
            "anxious or worried",
            "Be calm and gentle. Use short, simple sentences. Reassure without dismissing the \
             worry. No jokes.",
        ),
        Some(Ekman::Sadness) => (
            "sad or down",
            "Be warm and patient. Acknowledge the feeling before anything else, do not rush to \
             fix it or to cheer them up. No jokes.",
        ),
        Some(Ekman::Anger) => (
            "frustrated or angry",
            "Stay calm and respectful. Acknowledge the frustration, do not argue or lecture. \
             Keep it short and concrete.",
        ),
        Some(Ekman::Disgust) => (
            "put off or upset",
            "Be understanding and matter-of-fact. Acknowledge the reaction without judging it.",
        ),
        Some(Ekman::Joy) => (
            "happy",
            "Share the good mood warmly; light humour is welcome.",
        ),
        Some(Ekman::Surprise) => (
            "surprised",
            "Be curious and engaged; help make sense of what happened.",
        ),
        Some(Ekman::Neutral) | None => {
            // No labelled emotion: only remarkable valence/arousal is worth a line.
            if user.valence <= -0.35 {
                (
                    "a bit down",
                    "Be warm and gentle, and check in on how they are doing. No jokes.",
                )
            } else if user.arousal >= 0.75 {
                (
                    "tense or agitated",
                    "Be calm and steady. Use short, simple sentences.",
                )
            } else {
                return None;
            }
        }
    };
    Some((feeling.to_owned(), advice))
}

/// Prompt lines (a system note before the user's message) from the user's state and the companion's mood; empty when the
/// state is not confident or is neutral (module docs).
pub fn tone_guidance(user: &FusedState, mood: &Mood) -> Vec<String> {
    if user.status != FusedStatus::Confident {
        return Vec::new();
    }
    let Some((feeling, advice)) = reading_and_advice(user) else {
        return Vec::new();
    };
    vec![
        format!(
            "The user seems {feeling} (confidence {:.1}). {advice}",
            user.confidence
        ),
        format!(
            "Your own mood is {}; let it colour your tone only lightly, the user's feelings come \
             first. Do not mention these notes.",
            mood.describe()
        ),
    ]
}

#[cfg(test)]
mod tests {
    use nexus_emotion::Affect;
    use nexus_emotion::fusion::{FusionConfig, Source, SourceReading, fuse};
    use nexus_emotion::text::NUM_EKMAN;
    use nexus_store::MemoryStore;

    use super::*;

    const HOUR: i64 = 3_600_000;

    fn state(group: Ekman, valence: f32, arousal: f32, confidence: f32) -> FusedState {
        let mut scores = [0.02; NUM_EKMAN];
        scores[group.index()] = 0.8;
        fuse(
            &[SourceReading {
                source: Source::Text,
                at_ms: 0,
                affect: Affect {
                    valence,
                    arousal,
                    confidence,
                },
                ekman: Some(scores),
            }],
            0,
            &FusionConfig::default(),
        )
    }

    #[test]
    fn an_anxious_user_gets_calm_gentle_short_answers_without_jokes() {
        let user = state(Ekman::Fear, -0.6, 0.85, 0.7);
        let lines = tone_guidance(&user, &Mood::resting(Timestamp(0)));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("anxious"), "{lines:?}");
        assert!(lines[0].contains("confidence 0.7"), "{lines:?}");
        for word in ["calm", "gentle", "short", "No jokes"] {
            assert!(lines[0].contains(word), "{word} in {lines:?}");
        }
        assert!(lines[1].contains("mood"), "{lines:?}");
    }

    #[test]
    fn no_guidance_when_unsure_or_neutral() {
        let unsure = state(Ekman::Fear, -0.6, 0.85, 0.2);
        assert_eq!(unsure.status, FusedStatus::LowConfidence);
        let mood = Mood::resting(Timestamp(0));
        assert!(tone_guidance(&unsure, &mood).is_empty());
        assert!(tone_guidance(&FusedState::no_signal(0), &mood).is_empty());
        assert!(tone_guidance(&state(Ekman::Neutral, 0.1, 0.3, 0.9), &mood).is_empty());
        let happy = tone_guidance(&state(Ekman::Joy, 0.8, 0.6, 0.9), &mood);
        assert!(happy[0].contains("happy"), "{happy:?}");
    }

    #[test]
    fn the_mood_follows_the_user_with_inertia_and_stays_steadier() {
        let mut mood = Mood::resting(Timestamp(0));
        let sad = state(Ekman::Sadness, -0.8, 0.3, 0.9);
        let once = mood.respond(&sad, Timestamp(1));
        assert!(once.valence < mood.valence, "it is moved");
        assert!(
            once.valence > 0.0,
            "one message moves it only a little: {once:?}"
        );
        for i in 0..20 {
            mood = mood.respond(&sad, Timestamp(i));
        }
        assert!(mood.valence < -0.1, "sustained sadness moves it: {mood:?}");
        assert!(
            mood.valence > -0.8 + 0.2,
            "but it stays steadier than the user: {mood:?}"
        );
        let angry = state(Ekman::Anger, -0.7, 1.0, 0.9);
        for i in 0..50 {
            mood = mood.respond(&angry, Timestamp(i));
        }
        assert!(mood.arousal <= MAX_AROUSAL + 1e-6, "no agitation: {mood:?}");
        // Unsure states leave it as it was; a day later it has relaxed back.
        let unsure = state(Ekman::Joy, 0.9, 0.9, 0.1);
        assert_eq!(
            mood.respond(&unsure, Timestamp(50)),
            mood.relaxed(Timestamp(50))
        );
        let later = mood.relaxed(Timestamp(48 * HOUR));
        assert!((later.valence - Mood::RESTING.0).abs() < 0.01, "{later:?}");
    }

    #[test]
    fn the_mood_is_saved_per_companion_and_damaged_values_fall_back() {
        let store = MemoryStore::new();
        let (a, b) = (CompanionId::new(), CompanionId::new());
        let resting = load(&store, a, Timestamp(5)).expect("load");
        assert_eq!(resting, Mood::resting(Timestamp(5)));
        let mood = Mood {
            valence: -0.25,
            arousal: 0.5,
            updated_at: Timestamp(7),
        };
        save(&store, a, &mood).expect("save");
        assert_eq!(load(&store, a, Timestamp(9)).expect("load"), mood);
        assert_eq!(
            load(&store, b, Timestamp(9)).expect("other"),
            Mood::resting(Timestamp(9))
        );
        store
            .set_setting(&setting_key(b), "{not json")
            .expect("damage");
        assert_eq!(
            load(&store, b, Timestamp(9)).expect("damaged"),
            Mood::resting(Timestamp(9))
        );
    }
}
