//! A cheap "is this English?" check. The model was trained on English Reddit comments only; on
//! other languages its scores are noise, so such texts are flagged and get a low confidence.
//!
//! Signals (no language model, a few microseconds per text):
//! * the share of letters outside ASCII (Cyrillic, CJK, Arabic, Greek... ; accented Latin letters
//!   in an English sentence stay far below the limit),
//! * for Latin-script text, the share of words that are very common English function words
//!   (every English sentence of a few words has some, most other languages have none) together
//!   with how much WordPiece has to split the words (English vocabulary: about 1.2 pieces per
//!   word; Spanish, German, Indonesian... much more).

/// Very common English words; at least one appears in nearly every English sentence of four
/// words or more.
const COMMON_ENGLISH: &[&str] = &[
    "a", "about", "after", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because",
    "been", "but", "by", "can", "could", "did", "do", "does", "dont", "for", "from", "get", "got",
    "had", "has", "have", "he", "her", "him", "his", "how", "i", "if", "im", "in", "is", "it",
    "its", "just", "like", "me", "more", "my", "no", "not", "now", "of", "on", "one", "or", "our",
    "out", "so", "some", "that", "the", "their", "them", "then", "there", "they", "this", "to",
    "too", "up", "us", "very", "was", "we", "were", "what", "when", "who", "why", "will", "with",
    "would", "you", "your",
];

/// Limit on the share of non-ASCII letters.
const MAX_NON_ASCII: f32 = 0.3;

/// The outcome of the check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanguageCheck {
    /// The text is probably not English.
    pub maybe_not_english: bool,
    /// Share of the text's word pieces the tokenizer knows (1 - unknown tokens share).
    pub readable: f32,
}

/// Checks `text`, given how the tokenizer split it: `pieces` word pieces (special tokens
/// excluded), of which `unknown` were `[UNK]`.
pub fn check(text: &str, pieces: usize, unknown: usize) -> LanguageCheck {
    let readable = if pieces == 0 {
        0.0
    } else {
        1.0 - unknown as f32 / pieces as f32
    };
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    let non_ascii = text
        .chars()
        .filter(|c| c.is_alphabetic() && !c.is_ascii())
        .count();
    if letters == 0 {
        return LanguageCheck {
            maybe_not_english: false,
            readable,
        };
    }
    if non_ascii as f32 / letters as f32 > MAX_NON_ASCII {
        return LanguageCheck {
            maybe_not_english: true,
            readable,
        };
    }
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphabetic())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let common = words
        .iter()
        .filter(|w| COMMON_ENGLISH.contains(&w.as_str()))
        .count();
    let pieces_per_word = pieces as f32 / words.len().max(1) as f32;
    let n = words.len();
    let maybe_not_english = (n >= 4 && common == 0 && pieces_per_word >= 1.5)
        || (n >= 8 && (common as f32) < 0.08 * n as f32 && pieces_per_word >= 1.4);
    LanguageCheck {
        maybe_not_english,
        readable,
    }
}
