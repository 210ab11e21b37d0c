//! Long-term memory: learning durable facts after each exchange, recalling the relevant ones
//! when building a prompt, and forgetting on request.
//!
//! * Learning ([`Memories::learn`]): rules find candidate facts in the user's message
//!   ([`extract`]); each is embedded; a candidate that says what an existing memory already
//!   says (cosine ≥ `dedupe_cosine`, or the same text) is dropped; one about the same subject as
//!   an unpinned memory (e.g. `user.home`) supersedes it, and the old one stays in the history.
//! * Recall ([`Memories::recall`]): the query is embedded and scored against an in-memory
//!   [`index::VectorIndex`] by relevance (cosine), recency (exponential decay with a half-life)
//!   and importance, pinned memories first among equals, within a token budget.
//! * Forgetting ([`Memories::forget_about`]): deletes every memory (superseded versions
//!   included) that names the subject or is semantically close to it.

pub mod extract;
pub mod index;

use nexus_common::{Clock, CompanionId, MemoryId, Timestamp};
use nexus_inference::Embedder;
use nexus_store::{MemoryItem, Message, Store};
use serde::{Deserialize, Serialize};

use self::index::{Meta, VectorIndex};
use crate::Result;

/// Tuning of learning and recall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemorySettings {
    /// A candidate at least this similar to an existing memory is a duplicate.
    pub dedupe_cosine: f32,
    /// Most memories put into one prompt.
    pub max_recalled: usize,
    /// Token budget for recalled memories in the prompt.
    pub token_budget: usize,
    /// Memories less relevant than this are not recalled (unless pinned).
    pub min_cosine: f32,
    /// Weight of relevance in the recall score.
    pub w_relevance: f32,
    /// Weight of recency.
    pub w_recency: f32,
    /// Weight of importance.
    pub w_importance: f32,
    /// Recency halves every this many days.
    pub half_life_days: f32,
    /// A subject similar at least this much is "about" it when forgetting.
    pub forget_cosine: f32,
    /// Added to a memory's relevance for each (of at most two) content words it shares with
    /// the query.
    pub keyword_boost: f32,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            dedupe_cosine: 0.9,
            max_recalled: 6,
            token_budget: 220,
            min_cosine: 0.3,
            w_relevance: 0.65,
            w_recency: 0.15,
            w_importance: 0.2,
            half_life_days: 30.0,
            forget_cosine: 0.6,
            keyword_boost: 0.1,
        }
    }
}

/// What one call to [`Memories::learn`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Learned {
    /// New memories.
    pub added: Vec<MemoryItem>,
    /// `(old, new)` pairs where a new memory superseded an old one.
    pub superseded: Vec<(MemoryId, MemoryId)>,
    /// Candidates dropped as duplicates.
    pub duplicates: usize,
}

/// A memory chosen for a prompt, with its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    /// The memory.
    pub memory: MemoryItem,
    /// Cosine similarity to the query.
    pub relevance: f32,
    /// Combined score.
    pub score: f32,
}

/// A companion's active memories with their vector index, ready for recall. Build it once and
/// rebuild after learning or editing ([`Memories::snapshot`]).
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshot {
    items: Vec<MemoryItem>,
    index: VectorIndex,
}

impl MemorySnapshot {
    /// Builds the index over `items` (those without a proper embedding are kept but can only be
    /// recalled when pinned).
    pub fn new(items: Vec<MemoryItem>, dim: usize) -> Self {
        let mut index = VectorIndex::new(dim);
        let mut ordered = Vec::with_capacity(items.len());
        let mut unindexed = Vec::new();
        for m in items {
            let meta = Meta {
                id: m.id,
                importance: m.importance,
                pinned: m.pinned,
                fresh_at: m.last_used_at.map_or(m.created_at, |u| u.max(m.created_at)),
            };
            if index.push(meta, &m.embedding) {
                ordered.push(m);
            } else {
                unindexed.push(m);
            }
        }
        // Slots of the index are the first `index.len()` items.
        ordered.extend(unindexed);
        Self {
            items: ordered,
            index,
        }
    }

    /// All memories of the snapshot.
    pub fn items(&self) -> &[MemoryItem] {
        &self.items
    }

    /// Number of memories.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Recall by an already embedded query (what [`Memories::recall`] does after embedding).
    /// `keywords` ([`keywords`] of the query text) lift memories that name what the query
    /// names: short facts and questions about them are often further apart in embedding space
    /// than they should be ("Should I take my dog to the beach?" and "The user's dog is called
    /// Biscuit." have a cosine of 0.23 with MiniLM).
    pub fn recall_embedded(
        &self,
        query: &[f32],
        keywords: &[String],
        now: Timestamp,
        settings: &MemorySettings,
        count_tokens: &dyn Fn(&str) -> usize,
    ) -> Vec<Recalled> {
        let shortlist = (settings.max_recalled * 8).max(32);
        let half_life_ms = f64::from(settings.half_life_days.max(0.01)) * 86_400_000.0;
        let mut scored: Vec<Recalled> = self
            .index
            .nearest(query, shortlist)
            .into_iter()
            .filter_map(|hit| {
                let m = &self.items[hit.slot];
                let shared = if keywords.is_empty() {
                    0
                } else {
                    let words = keywords_of(&m.text);
                    keywords.iter().filter(|k| words.contains(k)).count()
                };
                let relevance = hit.cosine + settings.keyword_boost * shared.min(2) as f32;
                if relevance < settings.min_cosine && !m.pinned {
                    return None;
                }
                let meta = self.index.meta(hit.slot)?;
                let age = (now.0 - meta.fresh_at.0).max(0) as f64;
                let recency = (0.5f64).powf(age / half_life_ms) as f32;
                let score = settings.w_relevance * relevance
                    + settings.w_recency * recency
                    + settings.w_importance * m.importance
                    + if m.pinned { 0.05 } else { 0.0 };
                Some(Recalled {
                    memory: m.clone(),
                    relevance,
                    score,
                })
            })
            .collect();
        // Pinned memories without an embedding still come along.
        scored.extend(
            self.items[self.index.len()..]
                .iter()
                .filter(|m| m.pinned)
                .map(|m| Recalled {
                    memory: m.clone(),
                    relevance: 0.0,
                    score: settings.w_importance * m.importance + 0.05,
                }),
        );
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut used = 0;
        let mut out = Vec::new();
        for r in scored {
            if out.len() >= settings.max_recalled {
                break;
            }
            let t = count_tokens(&r.memory.text) + 2;
            if used + t > settings.token_budget {
                continue;
            }
            used += t;
            out.push(r);
        }
        out
    }
}

/// Long-term memory over a store, an embedder and a clock.
pub struct Memories<'a> {
    store: &'a dyn Store,
    embedder: &'a dyn Embedder,
    clock: &'a dyn Clock,
    settings: MemorySettings,
}

impl std::fmt::Debug for Memories<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memories")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<'a> Memories<'a> {
    /// Memory with these settings.
    pub fn new(
        store: &'a dyn Store,
        embedder: &'a dyn Embedder,
        clock: &'a dyn Clock,
        settings: MemorySettings,
    ) -> Self {
        Self {
            store,
            embedder,
            clock,
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    /// Learns the durable facts of a user message.
    pub fn learn(&self, companion: CompanionId, message: &Message) -> Result<Learned> {
        let candidates = extract::extract(&message.text);
        let mut learned = Learned::default();
        if candidates.is_empty() {
            return Ok(learned);
        }
        let texts: Vec<&str> = candidates.iter().map(|c| c.text.as_str()).collect();
        let vectors = self.embedder.embed(&texts)?;
        let mut active = self.store.list_memories(companion, false)?;
        let now = self.clock.now();
        for (cand, vector) in candidates.into_iter().zip(vectors) {
            let duplicate = active.iter().any(|m| {
                m.text.eq_ignore_ascii_case(&cand.text)
                    || (m.embedding.len() == vector.len()
                        && cosine(&m.embedding, &vector) >= self.settings.dedupe_cosine)
            });
            if duplicate {
                learned.duplicates += 1;
                continue;
            }
            let item = MemoryItem {
                id: MemoryId::new(),
                companion_id: companion,
                text: cand.text,
                kind: cand.kind,
                subject: cand.subject,
                importance: cand.importance,
                pinned: false,
                embedding: vector,
                source_message_ids: vec![message.id],
                created_at: now,
                updated_at: now,
                last_used_at: None,
                superseded_by: None,
            };
            let old = active
                .iter()
                .position(|m| !m.pinned && !item.subject.is_empty() && m.subject == item.subject);
            match old {
                Some(i) => {
                    let old = active.remove(i);
                    self.store.supersede_memory(old.id, &item)?;
                    learned.superseded.push((old.id, item.id));
                }
                None => self.store.insert_memory(&item)?,
            }
            active.push(item.clone());
            learned.added.push(item);
        }
        Ok(learned)
    }

    /// The active memories of a companion, indexed for recall.
    pub fn snapshot(&self, companion: CompanionId) -> Result<MemorySnapshot> {
        Ok(MemorySnapshot::new(
            self.store.list_memories(companion, false)?,
            self.embedder.dimension(),
        ))
    }

    /// The memories most worth knowing to answer `query`.
    pub fn recall(
        &self,
        snapshot: &MemorySnapshot,
        query: &str,
        count_tokens: &dyn Fn(&str) -> usize,
    ) -> Result<Vec<Recalled>> {
        if snapshot.is_empty() || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let q = self.embedder.embed(&[query])?.pop().unwrap_or_default();
        Ok(snapshot.recall_embedded(
            &q,
            &keywords_of(query),
            self.clock.now(),
            &self.settings,
            count_tokens,
        ))
    }

    /// Memories matching a free-text search, best first (superseded ones excluded).
    pub fn search(
        &self,
        companion: CompanionId,
        text: &str,
        k: usize,
    ) -> Result<Vec<(MemoryItem, f32)>> {
        let snapshot = self.snapshot(companion)?;
        let q = self.embedder.embed(&[text])?.pop().unwrap_or_default();
        let needle = text.to_lowercase();
        let mut hits: Vec<(MemoryItem, f32)> = snapshot
            .items
            .iter()
            .map(|m| {
                let sim = if m.embedding.len() == q.len() {
                    cosine(&m.embedding, &q)
                } else {
                    0.0
                };
                let bonus = if m.text.to_lowercase().contains(&needle) {
                    1.0
                } else {
                    0.0
                };
                (m.clone(), sim + bonus)
            })
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        hits.truncate(k);
        Ok(hits)
    }

    /// Deletes every memory (superseded versions included) about `subject`: whose text names it
    /// (every content word of it, see [`keywords_of`]) or whose meaning is close to it. Returns
    /// them.
    pub fn forget_about(&self, companion: CompanionId, subject: &str) -> Result<Vec<MemoryItem>> {
        let words = keywords_of(subject);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.embedder.embed(&[subject])?.pop().unwrap_or_default();
        let all = self.store.list_memories(companion, true)?;
        let doomed: Vec<MemoryItem> = all
            .into_iter()
            .filter(|m| {
                let text = keywords_of(&m.text);
                let names_it = words.iter().all(|w| text.contains(w));
                let close = m.embedding.len() == q.len()
                    && cosine(&m.embedding, &q) >= self.settings.forget_cosine;
                names_it || close
            })
            .collect();
        let ids: Vec<MemoryId> = doomed.iter().map(|m| m.id).collect();
        self.store.delete_memories(&ids)?;
        Ok(doomed)
    }
}

/// Content words of a text for keyword matching: lowercase, at least three letters, not a
/// stop word, with a plural `s` dropped.
pub fn keywords_of(text: &str) -> Vec<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "are", "but", "not", "you", "your", "all", "any", "can", "had", "her",
        "was", "one", "our", "out", "has", "have", "him", "his", "how", "its", "may", "who", "did",
        "does", "get", "got", "let", "she", "they", "them", "their", "this", "that", "with",
        "what", "when", "where", "which", "why", "will", "would", "should", "could", "about",
        "from", "into", "just", "like", "more", "some", "than", "then", "there", "these", "those",
        "very", "want", "been", "being", "were", "user", "user's", "called", "named", "take",
        "make", "know", "think", "really", "today", "tell", "there",
    ];
    let mut out: Vec<String> = text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .map(|w| w.strip_suffix("'s").unwrap_or(w))
        .filter(|w| w.chars().count() >= 3 && !STOP.contains(w))
        .map(|w| {
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Dot product of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
