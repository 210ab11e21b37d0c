//! Personas that evolve: Big Five trait scores and the relationship (familiarity, trust) move
//! slowly and within bounds as the user interacts; every change is recorded; locked traits never
//! move.
//!
//! The signals are deliberately simple and explainable (each change carries its reason):
//! familiarity grows with every exchange and with every fact learned, trust grows when the user
//! confides (feelings, people, life events) and shrinks a little with hostility, and the traits
//! drift towards what suits the user's way of talking (long, lively messages → more
//! extraverted; warmth → more agreeable; imaginative questions → more open; plans → more
//! conscientious; distress → calmer). A step is at most [`MAX_STEP`], and a trait never leaves
//! [`MAX_DRIFT`] around its starting value, so a companion stays recognisably itself.

use std::collections::{BTreeMap, BTreeSet};

use nexus_common::Timestamp;
use nexus_store::{Companion, MemoryKind, PersonaChange, PersonaState};

/// The Big Five traits, in the usual OCEAN order.
pub const TRAITS: [&str; 5] = [
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
];

/// Largest change of a trait in one exchange.
pub const MAX_STEP: f32 = 0.01;
/// Largest distance of a trait from its starting value.
pub const MAX_DRIFT: f32 = 0.15;

/// What one exchange tells about the user and the relationship.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// The user's message.
    pub user_text: String,
    /// Kinds of the memories learned from it.
    pub learned: Vec<MemoryKind>,
}

/// Starting trait scores read from the persona's words ("warm", "curious", "calm", …).
pub fn initial_traits(c: &Companion) -> BTreeMap<String, f32> {
    let words = format!("{} {} {}", c.personality, c.description, c.speaking_style).to_lowercase();
    let has = |list: &[&str]| list.iter().filter(|w| words.contains(*w)).count() as f32;
    let score =
        |up: &[&str], down: &[&str]| (0.5 + 0.1 * has(up) - 0.1 * has(down)).clamp(0.15, 0.85);
    BTreeMap::from([
        (
            "openness".into(),
            score(
                &[
                    "curious",
                    "creative",
                    "imaginative",
                    "playful",
                    "adventurous",
                    "open",
                ],
                &["traditional", "conventional"],
            ),
        ),
        (
            "conscientiousness".into(),
            score(
                &[
                    "organized",
                    "precise",
                    "reliable",
                    "careful",
                    "disciplined",
                    "thorough",
                ],
                &["chaotic", "careless", "spontaneous"],
            ),
        ),
        (
            "extraversion".into(),
            score(
                &[
                    "outgoing",
                    "energetic",
                    "talkative",
                    "playful",
                    "cheerful",
                    "lively",
                ],
                &["quiet", "shy", "reserved", "calm"],
            ),
        ),
        (
            "agreeableness".into(),
            score(
                &[
                    "warm",
                    "kind",
                    "supportive",
                    "gentle",
                    "friendly",
                    "caring",
                    "patient",
                ],
                &["blunt", "sarcastic", "grumpy"],
            ),
        ),
        (
            "neuroticism".into(),
            score(
                &["anxious", "moody", "nervous", "dramatic"],
                &["calm", "stable", "stoic", "relaxed", "patient"],
            ),
        ),
    ])
}

/// A fresh state for a companion.
pub fn initial_state(c: &Companion, now: Timestamp) -> PersonaState {
    PersonaState {
        companion_id: c.id,
        traits: initial_traits(c),
        locked: BTreeSet::new(),
        familiarity: 0.0,
        trust: 0.2,
        exchanges: 0,
        updated_at: now,
    }
}

fn count(text: &str, words: &[&str]) -> usize {
    let t = text.to_lowercase();
    words.iter().filter(|w| t.contains(*w)).count()
}

/// The direction each trait is pushed by one exchange, in [-1, 1], with the reason.
fn trait_pushes(s: &Signals) -> Vec<(&'static str, f32, &'static str)> {
    let t = &s.user_text;
    let words = t.split_whitespace().count();
    let lively = t.matches('!').count() + count(t, &["haha", "lol", ":)", "😀", "😂", "🙂", "❤"]);
    let warm = count(
        t,
        &[
            "thank",
            "thanks",
            "please",
            "love you",
            "appreciate",
            "you're great",
            "you are great",
            "sweet",
        ],
    );
    let hostile = count(
        t,
        &[
            "shut up",
            "stupid bot",
            "you're useless",
            "you are useless",
            "hate you",
            "idiot",
            "dumb",
        ],
    );
    let imaginative = count(
        t,
        &[
            "imagine", "what if", "story", "dream", "idea", "wonder", "create", "poem",
        ],
    );
    let planning = s.learned.iter().filter(|k| **k == MemoryKind::Plan).count()
        + count(t, &["schedule", "plan", "organize", "deadline"]);
    let distress = count(
        t,
        &[
            "sad",
            "anxious",
            "worried",
            "stressed",
            "lonely",
            "scared",
            "depressed",
            "overwhelmed",
            "cry",
        ],
    );
    let mut v = Vec::new();
    if words > 25 || lively > 0 {
        v.push(("extraversion", 1.0, "the user talks in a lively way"));
    } else if words <= 3 {
        v.push(("extraversion", -0.5, "the user keeps it short"));
    }
    if warm > 0 {
        v.push(("agreeableness", 1.0, "the user is warm"));
    }
    if hostile > 0 {
        v.push(("agreeableness", -0.5, "the user is hostile"));
    }
    if imaginative > 0 {
        v.push(("openness", 1.0, "the user brings imaginative topics"));
    }
    if planning > 0 {
        v.push(("conscientiousness", 1.0, "the user makes plans"));
    }
    if distress > 0 {
        v.push(("neuroticism", -1.0, "the user needs a calm presence"));
    }
    v
}

/// Applies one exchange to the state; returns the recorded changes (empty if nothing moved).
///
/// `base` are the starting traits the drift is bounded around (see [`initial_traits`]).
pub fn evolve(
    state: &mut PersonaState,
    base: &BTreeMap<String, f32>,
    signals: &Signals,
    now: Timestamp,
) -> Vec<PersonaChange> {
    let mut changes = Vec::new();
    let set =
        |field: &str, old: f32, new: f32, reason: &str, changes: &mut Vec<PersonaChange>| -> f32 {
            if (new - old).abs() >= 1e-6 {
                changes.push(PersonaChange {
                    companion_id: state.companion_id,
                    field: field.to_owned(),
                    old,
                    new,
                    reason: reason.to_owned(),
                    at: now,
                });
            }
            new
        };
    state.exchanges += 1;

    // Familiarity: every exchange, more when something was learned; asymptotic to 1.
    let learned = signals.learned.len() as f32;
    let step = (0.01 + 0.01 * learned.min(3.0)) * (1.0 - state.familiarity);
    let reason = if learned > 0.0 {
        "learned something about the user"
    } else {
        "another conversation"
    };
    state.familiarity = set(
        "familiarity",
        state.familiarity,
        (state.familiarity + step).clamp(0.0, 1.0),
        reason,
        &mut changes,
    );

    // Trust: confiding raises it, hostility lowers it a little.
    let confides = signals.learned.iter().any(|k| {
        matches!(
            k,
            MemoryKind::Feeling | MemoryKind::Person | MemoryKind::Event
        )
    });
    let hostile = count(
        &signals.user_text,
        &[
            "shut up",
            "stupid bot",
            "you're useless",
            "you are useless",
            "hate you",
            "idiot",
        ],
    ) > 0;
    if confides {
        let new = state.trust + 0.03 * (1.0 - state.trust);
        state.trust = set(
            "trust",
            state.trust,
            new.clamp(0.0, 1.0),
            "the user confided something personal",
            &mut changes,
        );
    } else if hostile {
        let new = state.trust - 0.02;
        state.trust = set(
            "trust",
            state.trust,
            new.clamp(0.0, 1.0),
            "the user was hostile",
            &mut changes,
        );
    }

    for (name, direction, reason) in trait_pushes(signals) {
        if state.locked.contains(name) {
            continue;
        }
        let old = state.traits.get(name).copied().unwrap_or(0.5);
        let origin = base.get(name).copied().unwrap_or(0.5);
        let new = (old + MAX_STEP * direction)
            .clamp(origin - MAX_DRIFT, origin + MAX_DRIFT)
            .clamp(0.0, 1.0);
        let new = set(name, old, new, reason, &mut changes);
        state.traits.insert(name.to_owned(), new);
    }
    if !changes.is_empty() {
        state.updated_at = now;
    }
    changes
}

/// Locks or unlocks a trait; returns the change to record, or `None` if nothing changed or the
/// trait is unknown.
pub fn set_lock(
    state: &mut PersonaState,
    name: &str,
    locked: bool,
    now: Timestamp,
) -> Option<PersonaChange> {
    if !TRAITS.contains(&name) {
        return None;
    }
    let changed = if locked {
        state.locked.insert(name.to_owned())
    } else {
        state.locked.remove(name)
    };
    changed.then(|| {
        let v = state.traits.get(name).copied().unwrap_or(0.5);
        state.updated_at = now;
        PersonaChange {
            companion_id: state.companion_id,
            field: format!("{}:{name}", if locked { "lock" } else { "unlock" }),
            old: v,
            new: v,
            reason: "set by the user".into(),
            at: now,
        }
    })
}

/// Words for the system prompt that reflect the evolved state (empty when unremarkable).
pub fn prompt_hint(state: &PersonaState) -> String {
    let mut parts = Vec::new();
    if state.familiarity >= 0.6 {
        parts.push("You know the user well by now; talk like an old friend.".to_owned());
    } else if state.familiarity >= 0.25 {
        parts.push("You are getting to know the user.".to_owned());
    }
    if state.trust >= 0.6 {
        parts.push("The user trusts you with personal things; be gentle with them.".to_owned());
    }
    let t = |n: &str| state.traits.get(n).copied().unwrap_or(0.5);
    if t("extraversion") >= 0.7 {
        parts.push("You are lively and expressive.".to_owned());
    } else if t("extraversion") <= 0.3 {
        parts.push("You are calm and quiet.".to_owned());
    }
    if t("agreeableness") >= 0.7 {
        parts.push("You are warm and encouraging.".to_owned());
    }
    if t("openness") >= 0.7 {
        parts.push("You enjoy ideas and imagination.".to_owned());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use nexus_common::CompanionId;

    use super::*;

    fn companion() -> Companion {
        Companion {
            id: CompanionId::new(),
            name: "Nova".into(),
            description: String::new(),
            personality: "warm, curious, calm".into(),
            speaking_style: String::new(),
            greeting: String::new(),
            card: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn initial_traits_follow_the_persona_words() {
        let t = initial_traits(&companion());
        assert!(t["agreeableness"] > 0.5 && t["openness"] > 0.5 && t["neuroticism"] < 0.5);
        assert!(t.values().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn changes_are_small_bounded_recorded_and_respect_locks() {
        let c = companion();
        let base = initial_traits(&c);
        let mut s = initial_state(&c, Timestamp(0));
        let lively = Signals {
            user_text: "Haha thank you so much!!! What if we imagine a story together?".into(),
            learned: vec![MemoryKind::Feeling],
        };
        let first = evolve(&mut s, &base, &lively, Timestamp(1));
        assert!(
            first.iter().any(|c| c.field == "familiarity")
                && first.iter().any(|c| c.field == "trust")
        );
        for ch in &first {
            if TRAITS.contains(&ch.field.as_str()) {
                assert!((ch.new - ch.old).abs() <= MAX_STEP + 1e-6, "{ch:?}");
            }
            assert!(!ch.reason.is_empty());
        }
        assert!(set_lock(&mut s, "openness", true, Timestamp(2)).is_some());
        assert!(
            set_lock(&mut s, "openness", true, Timestamp(2)).is_none(),
            "already locked"
        );
        assert!(
            set_lock(&mut s, "charisma", true, Timestamp(2)).is_none(),
            "unknown trait"
        );
        let open_before = s.traits["openness"];
        for i in 0..1000 {
            evolve(&mut s, &base, &lively, Timestamp(10 + i));
        }
        assert_eq!(
            s.traits["openness"], open_before,
            "a locked trait never moves"
        );
        for name in TRAITS {
            assert!(
                (s.traits[name] - base[name]).abs() <= MAX_DRIFT + 1e-6,
                "{name} drifted too far"
            );
        }
        assert!(s.familiarity < 1.0 && s.familiarity > 0.9 && s.trust > 0.9);
        assert_eq!(s.exchanges, 1001);
    }

    #[test]
    fn hostility_lowers_trust_a_little() {
        let c = companion();
        let mut s = initial_state(&c, Timestamp(0));
        let changes = evolve(
            &mut s,
            &initial_traits(&c),
            &Signals {
                user_text: "shut up, you're useless".into(),
                learned: vec![],
            },
            Timestamp(1),
        );
        assert!(changes.iter().any(|c| c.field == "trust" && c.new < c.old));
    }
}
