//! The card's lorebook (`character_book`): entries of background knowledge that are put into
//! the prompt only when the conversation mentions them.
//!
//! Activation rules (the V2/V3 specifications leave matching "up to the application"; these
//! follow SillyTavern's defaults where the specifications are silent):
//! - Disabled entries (`enabled: false`) never activate; entries with empty content are never
//!   injected.
//! - `constant` entries always activate (within the budget), except `use_regex` ones, for which
//!   the V3 specification says `constant` is ignored.
//! - Otherwise an entry activates when one of its `keys` occurs in the last `scan_depth`
//!   messages (the book's `scan_depth`, [`DEFAULT_SCAN_DEPTH`] if it has none; the user's new
//!   message counts as the most recent). With `selective: true` and non-empty `secondary_keys`,
//!   one secondary key must occur as well.
//! - Keys match case-insensitively (full Unicode lower-casing) unless `case_sensitive: true`.
//! - Keys match as **whole words**: where a key begins (ends) with a letter, digit or `_`, the
//!   character before (after) the occurrence must not be one, so `cat` matches "a cat!" but not
//!   "category". Characters of scripts written without spaces (Chinese, Japanese, Thai, Korean
//!   syllables, ...) never count as word characters there, so such keys match as substrings.
//!   Keys are literal text (SillyTavern's `/regex/` key syntax is not interpreted).
//! - `use_regex: true` entries treat each key as a regular expression (the `regex` crate: linear
//!   time, size-limited compilation; an invalid pattern never matches, as the V3 specification
//!   requires; `case_sensitive` false adds the `i` flag).
//! - `recursive_scanning: true`: the content of activated entries is scanned for further keys
//!   until nothing new activates.
//! - Decorators (`@@name value` lines at the start of the content) are removed from the injected
//!   text; `@@activate`, `@@dont_activate` and `@@scan_depth N` are honoured, others ignored
//!   (`@@@` fallbacks apply when the decorator before them was not recognized).
//! - Budget: the smaller of the caller's budget and the book's `token_budget`. Activated entries
//!   are admitted by priority (higher `priority` first, falling back on `insertion_order` when an
//!   entry has no priority, as V3 suggests), and admission stops at the first entry that does not
//!   fit, so a lower-priority entry is never kept while a higher-priority one is cut. The admitted
//!   entries are returned in `insertion_order` (lower first), ties in book order.

use serde_json::{Map, Value};

/// Messages scanned for keys when the book does not say (SillyTavern's default).
pub const DEFAULT_SCAN_DEPTH: usize = 2;

/// Most entries read from one book (more are ignored).
pub const MAX_ENTRIES: usize = 2_000;

/// Most compiled size of one regular-expression key (bytes).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Where an entry goes relative to the character's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Position {
    /// Before the character definition (the default).
    #[default]
    BeforeChar,
    /// After the character definition.
    AfterChar,
}

/// One lorebook entry, as used for activation.
#[derive(Debug, Clone, PartialEq)]
pub struct LoreEntry {
    /// Index in the book's `entries`.
    pub index: usize,
    /// Primary keys.
    pub keys: Vec<String>,
    /// Secondary keys (used when `selective`).
    pub secondary_keys: Vec<String>,
    /// The text injected, without decorators.
    pub content: String,
    /// Disabled entries never activate.
    pub enabled: bool,
    /// Always activates.
    pub constant: bool,
    /// Needs a secondary key too.
    pub selective: bool,
    /// Lower values are inserted first.
    pub insertion_order: f64,
    /// Keys compare case-sensitively.
    pub case_sensitive: bool,
    /// When cutting for the budget, lower priorities go first.
    pub priority: Option<f64>,
    /// Before or after the character definition.
    pub position: Position,
    /// Keys are regular expressions.
    pub use_regex: bool,
    /// `@@activate`: activates in any case.
    pub force_activate: bool,
    /// `@@dont_activate`: never activates (unless `@@activate`).
    pub never_activate: bool,
    /// `@@scan_depth N`: this entry's own scan depth.
    pub scan_depth: Option<usize>,
}

/// A character's lorebook.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lorebook {
    /// The book's name, if any.
    pub name: Option<String>,
    /// How many recent messages are scanned for keys.
    pub scan_depth: Option<usize>,
    /// Most tokens the injected entries may take.
    pub token_budget: Option<usize>,
    /// Whether activated entries' content can activate other entries.
    pub recursive_scanning: bool,
    /// The entries, in book order.
    pub entries: Vec<LoreEntry>,
}

impl Lorebook {
    /// The lorebook of a card: `card` is a card's `data` object (as in `Companion::card`) or a
    /// whole card (`{"spec": ..., "data": {...}}`). `None` if it has no `character_book` object.
    /// Reading is lenient: malformed entries or fields are skipped or take their defaults.
    pub fn from_card(card: &Value) -> Option<Lorebook> {
        let data = match card.get("data") {
            Some(d @ Value::Object(_)) if card.get("spec").is_some() => d,
            _ => card,
        };
        Self::from_data(data.as_object()?)
    }

    /// The lorebook of a card's `data` object, if it has a `character_book` object.
    pub fn from_data(data: &Map<String, Value>) -> Option<Lorebook> {
        let book = data.get("character_book")?.as_object()?;
        let entries = book
            .get("entries")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .take(MAX_ENTRIES)
                    .enumerate()
                    .filter_map(|(i, e)| e.as_object().map(|e| LoreEntry::from_json(i, e)))
                    .collect()
            })
            .unwrap_or_default();
        Some(Lorebook {
            name: book.get("name").and_then(Value::as_str).map(str::to_owned),
            scan_depth: book.get("scan_depth").and_then(as_count),
            token_budget: book.get("token_budget").and_then(as_count),
            recursive_scanning: book
                .get("recursive_scanning")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            entries,
        })
    }

    /// The entries to inject for a conversation whose messages are `recent` (chronological;
    /// the newest last, usually the user's new message), within `budget` tokens as counted by
    /// `count`. See the module documentation for the rules.
    pub fn activate(
        &self,
        recent: &[&str],
        budget: usize,
        count: &dyn Fn(&str) -> usize,
    ) -> Vec<&LoreEntry> {
        let default_depth = self.scan_depth.unwrap_or(DEFAULT_SCAN_DEPTH);
        let window =
            |depth: usize| -> String { recent[recent.len().saturating_sub(depth)..].join("\n") };
        let default_text = ScanText::new(window(default_depth));
        let mut active = vec![false; self.entries.len()];
        for (slot, e) in active.iter_mut().zip(&self.entries) {
            if !e.can_activate() {
                continue;
            }
            *slot = e.force_activate
                || (e.constant && !e.use_regex)
                || match e.scan_depth {
                    Some(d) if d != default_depth => e.matches(&ScanText::new(window(d))),
                    _ => e.matches(&default_text),
                };
        }
        if self.recursive_scanning {
            // Each round scans only the content activated in the previous one; at most one round
            // per entry, since every round activates at least one more.
            let mut fresh: Vec<usize> = (0..self.entries.len()).filter(|&i| active[i]).collect();
            while !fresh.is_empty() {
                let text = ScanText::new(
                    fresh
                        .iter()
                        .map(|&i| self.entries[i].content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
                fresh.clear();
                for (i, e) in self.entries.iter().enumerate() {
                    if !active[i] && e.can_activate() && e.matches(&text) {
                        active[i] = true;
                        fresh.push(i);
                    }
                }
            }
        }

        let mut candidates: Vec<&LoreEntry> = self
            .entries
            .iter()
            .zip(&active)
            .filter(|(e, on)| **on && !e.content.trim().is_empty())
            .map(|(e, _)| e)
            .collect();
        candidates.sort_by(|a, b| {
            b.effective_priority()
                .total_cmp(&a.effective_priority())
                .then(a.insertion_order.total_cmp(&b.insertion_order))
                .then(a.index.cmp(&b.index))
        });
        let budget = self.token_budget.map_or(budget, |b| b.min(budget));
        let mut used = 0usize;
        let mut chosen = Vec::new();
        for e in candidates {
            let cost = count(&e.content);
            if used + cost > budget {
                break;
            }
            used += cost;
            chosen.push(e);
        }
        chosen.sort_by(|a, b| {
            a.insertion_order
                .total_cmp(&b.insertion_order)
                .then(a.index.cmp(&b.index))
        });
        chosen
    }
}

/// A non-negative whole number from JSON (numbers or numeric strings; fractions truncated).
fn as_count(v: &Value) -> Option<usize> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (f.is_finite() && f >= 0.0).then(|| f.min(usize::MAX as f64) as usize)
}

fn as_number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// Keys as an array of strings (a comma-separated string is accepted too).
fn keys(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

impl LoreEntry {
    fn from_json(index: usize, e: &Map<String, Value>) -> LoreEntry {
        let flag = |k: &str| e.get(k).and_then(Value::as_bool);
        let raw = e.get("content").and_then(Value::as_str).unwrap_or("");
        let (decorators, content) = split_decorators(raw);
        let mut entry = LoreEntry {
            index,
            keys: keys(e.get("keys")),
            secondary_keys: keys(e.get("secondary_keys")),
            content: content.to_owned(),
            enabled: flag("enabled").unwrap_or(true),
            constant: flag("constant").unwrap_or(false),
            selective: flag("selective").unwrap_or(false),
            insertion_order: as_number(e.get("insertion_order")).unwrap_or(0.0),
            case_sensitive: flag("case_sensitive").unwrap_or(false),
            priority: as_number(e.get("priority")),
            position: match e.get("position").and_then(Value::as_str) {
                Some("after_char") => Position::AfterChar,
                _ => Position::BeforeChar,
            },
            use_regex: flag("use_regex").unwrap_or(false),
            force_activate: false,
            never_activate: false,
            scan_depth: None,
        };
        entry.apply(&decorators);
        entry
    }

    /// Applies the decorators we know; `@@@` fallbacks only when the decorator they follow was
    /// not recognized.
    fn apply(&mut self, decorators: &[(bool, &str, &str)]) {
        let mut previous_recognized = true;
        let mut seen: Vec<&str> = Vec::new();
        for &(fallback, name, value) in decorators {
            if fallback && previous_recognized {
                continue;
            }
            // The first decorator of a name wins.
            if seen.contains(&name) {
                previous_recognized = true;
                continue;
            }
            let recognized = match name {
                "activate" => {
                    self.force_activate = true;
                    true
                }
                "dont_activate" => {
                    self.never_activate = true;
                    true
                }
                "scan_depth" => match value.trim().parse::<usize>() {
                    Ok(d) => {
                        self.scan_depth = Some(d);
                        true
                    }
                    Err(_) => false,
                },
                _ => false,
            };
            if recognized {
                seen.push(name);
            }
            previous_recognized = recognized;
        }
    }

    fn can_activate(&self) -> bool {
        self.enabled && (self.force_activate || !self.never_activate)
    }

    /// Priority used when cutting for the budget: `priority`, else `insertion_order`.
    fn effective_priority(&self) -> f64 {
        self.priority.unwrap_or(self.insertion_order)
    }

    fn matches(&self, text: &ScanText) -> bool {
        if self.use_regex {
            return self
                .keys
                .iter()
                .any(|k| regex_matches(k, &text.original, self.case_sensitive));
        }
        let any = |keys: &[String]| keys.iter().any(|k| text.contains(k, self.case_sensitive));
        any(&self.keys)
            && (!self.selective || self.secondary_keys.is_empty() || any(&self.secondary_keys))
    }
}

/// Splits the leading decorator lines (`@@name value`, `@@@name value` for fallbacks) from the
/// content; the newlines around them go too.
fn split_decorators(raw: &str) -> (Vec<(bool, &str, &str)>, &str) {
    let mut decorators = Vec::new();
    let mut rest = raw;
    loop {
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line = rest[..line_end].trim_end_matches(['\n', '\r']);
        let Some(body) = line.strip_prefix("@@") else {
            break;
        };
        let (fallback, body) = match body.strip_prefix('@') {
            Some(b) => (true, b),
            None => (false, body),
        };
        let (name, value) = body.split_once(' ').unwrap_or((body, ""));
        decorators.push((fallback, name.trim(), value.trim()));
        rest = &rest[line_end..];
        if rest.is_empty() {
            break;
        }
    }
    (decorators, rest.trim_matches(['\n', '\r']))
}

fn regex_matches(pattern: &str, text: &str, case_sensitive: bool) -> bool {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(!case_sensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .is_ok_and(|re| re.is_match(text))
}

/// The scanned text, with a lower-cased copy for case-insensitive keys.
struct ScanText {
    original: String,
    lower: String,
}

impl ScanText {
    fn new(original: String) -> Self {
        let lower = original.to_lowercase();
        Self { original, lower }
    }

    fn contains(&self, key: &str, case_sensitive: bool) -> bool {
        if case_sensitive {
            contains_word(&self.original, key)
        } else {
            contains_word(&self.lower, &key.to_lowercase())
        }
    }
}

/// Whether `key` occurs in `text` on word boundaries (see the module documentation).
fn contains_word(text: &str, key: &str) -> bool {
    let (Some(first), Some(last)) = (key.chars().next(), key.chars().next_back()) else {
        return false;
    };
    text.match_indices(key).any(|(at, _)| {
        let before_ok =
            !is_word_char(first) || !text[..at].chars().next_back().is_some_and(is_word_char);
        let after_ok = !is_word_char(last)
            || !text[at + key.len()..]
                .chars()
                .next()
                .is_some_and(is_word_char);
        before_ok && after_ok
    })
}

/// Letters, digits and `_`, except in scripts written without spaces between words.
fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() || c == '_') && !is_unspaced_script(c)
}

fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF       // Thai, Lao
        | 0x1000..=0x109F     // Myanmar
        | 0x1780..=0x17FF     // Khmer
        | 0x1100..=0x11FF     // Hangul Jamo
        | 0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3100..=0x31FF     // Bopomofo, Hangul compatibility Jamo, Katakana extensions
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xAC00..=0xD7AF     // Hangul syllables
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0xFF66..=0xFF9F     // half-width Katakana
        | 0x20000..=0x3FFFF // CJK extensions B and later
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn book(entries: Value) -> Lorebook {
        Lorebook::from_card(&json!({"name": "A", "character_book": {"entries": entries}}))
            .expect("book")
    }

    fn active<'a>(b: &'a Lorebook, recent: &[&str]) -> Vec<&'a str> {
        b.activate(recent, 1000, &words)
            .into_iter()
            .map(|e| e.content.as_str())
            .collect()
    }

    #[test]
    fn keys_activate_entries_as_whole_words_case_insensitively() {
        let b = book(json!([
            {"keys": ["cat"], "content": "CAT", "enabled": true, "insertion_order": 1},
            {"keys": ["Dog House"], "content": "DOG", "enabled": true, "insertion_order": 2},
            {"keys": ["猫"], "content": "NEKO", "enabled": true, "insertion_order": 3},
        ]));
        assert!(active(&b, &["nothing here"]).is_empty());
        assert_eq!(active(&b, &["I have a Cat."]), vec!["CAT"]);
        assert!(
            active(&b, &["a category", "concatenate"]).is_empty(),
            "whole words"
        );
        assert_eq!(active(&b, &["the dog house is red"]), vec!["DOG"]);
        assert_eq!(
            active(&b, &["猫が好き"]),
            vec!["NEKO"],
            "CJK keys match inside text"
        );
    }

    #[test]
    fn case_sensitive_selective_constant_and_disabled() {
        let b = book(json!([
            {"keys": ["Rose"], "content": "ROSE", "case_sensitive": true, "insertion_order": 1},
            {"keys": ["sword"], "secondary_keys": ["fire"], "selective": true,
             "content": "FLAME SWORD", "insertion_order": 2},
            {"keys": [], "constant": true, "content": "ALWAYS", "insertion_order": 0},
            {"keys": ["sword"], "enabled": false, "content": "OFF", "insertion_order": 3},
            {"keys": ["sword"], "content": "   ", "insertion_order": 4},
        ]));
        assert_eq!(active(&b, &["a rose"]), vec!["ALWAYS"]);
        assert_eq!(active(&b, &["a Rose"]), vec!["ALWAYS", "ROSE"]);
        assert_eq!(
            active(&b, &["my sword"]),
            vec!["ALWAYS"],
            "needs a secondary key"
        );
        assert_eq!(
            active(&b, &["my sword", "is on fire"]),
            vec!["ALWAYS", "FLAME SWORD"]
        );
    }

    #[test]
    fn only_the_last_scan_depth_messages_are_scanned() {
        let mut b = book(json!([{"keys": ["apple"], "content": "APPLE"}]));
        assert!(
            active(&b, &["apple", "a", "b"]).is_empty(),
            "default depth 2"
        );
        assert_eq!(active(&b, &["x", "apple", "b"]), vec!["APPLE"]);
        b.scan_depth = Some(3);
        assert_eq!(active(&b, &["apple", "a", "b"]), vec!["APPLE"]);
        b.scan_depth = Some(0);
        assert!(active(&b, &["apple"]).is_empty());
    }

    #[test]
    fn the_budget_cuts_lowest_priority_first_and_output_follows_insertion_order() {
        let b = book(json!([
            {"keys": ["k"], "content": "one two three", "insertion_order": 5, "priority": 1},
            {"keys": ["k"], "content": "four five", "insertion_order": 1, "priority": 10},
            {"keys": ["k"], "content": "six", "insertion_order": 3, "priority": 5},
        ]));
        let got = |budget| -> Vec<String> {
            b.activate(&["k"], budget, &words)
                .into_iter()
                .map(|e| e.content.clone())
                .collect()
        };
        assert_eq!(got(100), vec!["four five", "six", "one two three"]);
        assert_eq!(got(5), vec!["four five", "six"], "priority 1 is cut first");
        assert_eq!(got(2), vec!["four five"]);
        assert!(
            got(1).is_empty(),
            "the top entry does not fit: nothing below it jumps in"
        );
        let mut limited = b.clone();
        limited.token_budget = Some(3);
        assert_eq!(
            limited.activate(&["k"], 100, &words).len(),
            2,
            "book budget"
        );
    }

    #[test]
    fn recursive_scanning_follows_activated_content() {
        let mut b = book(json!([
            {"keys": ["castle"], "content": "The castle belongs to the king."},
            {"keys": ["king"], "content": "The king is old."},
        ]));
        assert_eq!(active(&b, &["the castle"]).len(), 1);
        b.recursive_scanning = true;
        assert_eq!(active(&b, &["the castle"]).len(), 2);
    }

    #[test]
    fn decorators_are_stripped_and_some_honoured() {
        let b = book(json!([
            {"keys": ["x"], "content": "@@dont_activate\nHIDDEN"},
            {"keys": [], "content": "@@activate\n\nFORCED"},
            {"keys": ["far"], "content": "@@unknown 1\n@@@scan_depth 5\nDEEP"},
        ]));
        assert_eq!(b.entries[1].content, "FORCED");
        assert_eq!(b.entries[2].scan_depth, Some(5));
        assert_eq!(active(&b, &["x"]), vec!["FORCED"]);
        assert_eq!(active(&b, &["far", "a", "b", "c"]), vec!["FORCED", "DEEP"]);
    }

    #[test]
    fn regex_keys_and_lenient_reading() {
        let b = book(json!([
            {"keys": ["^hel+o"], "use_regex": true, "content": "RE"},
            {"keys": ["(unclosed"], "use_regex": true, "content": "BAD"},
            {"keys": "alpha, beta", "content": "CSV", "insertion_order": "2"},
            "not an entry",
        ]));
        assert_eq!(b.entries.len(), 3);
        assert_eq!(b.entries[2].keys, vec!["alpha", "beta"]);
        assert_eq!(active(&b, &["HELLLO there"]), vec!["RE"]);
        assert_eq!(active(&b, &["beta"]), vec!["CSV"]);
        assert!(Lorebook::from_card(&json!({"name": "x"})).is_none());
        let whole = json!({"spec": "chara_card_v2", "data": {"character_book": {"entries": []}}});
        assert!(
            Lorebook::from_card(&whole).is_some(),
            "a whole card works too"
        );
    }
}
