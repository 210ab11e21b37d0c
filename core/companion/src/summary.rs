//! Rolling summaries: long conversations stay fast.
//!
//! A conversation's prompt holds the messages from a cut point onwards, preceded (in the system
//! prompt) by a summary of everything before the cut. When those messages outgrow their share
//! of the context window, the cut moves forwards in one step so that about half of the share is
//! left ([`plan_roll`]), and the messages it passes are folded into the summary
//! ([`summarize`]). Between two steps the start of the prompt does not change, so the model
//! reuses its cached prefix, and every step reads a bounded number of messages: prompt assembly
//! and time to first token stay flat however long the conversation grows (docs/BENCHMARKS.md).
//!
//! Summaries are extractive: the most telling sentences of what the user said, with their date.
//! An abstractive summary by the default 135M model would risk putting words in the user's
//! mouth and cost a generation per step; the user's own sentences cannot be wrong, and
//! long-term memory ([`crate::memory`]) keeps the durable facts anyway.

use nexus_common::Timestamp;
use nexus_store::{Message, Role};
use unicode_segmentation::UnicodeSegmentation;

use crate::memory::extract;
use crate::prompt::PER_MESSAGE_OVERHEAD;

/// Heading of the summary in the system prompt.
pub const HEADING: &str = "Earlier in this conversation:";

/// Where the cut should move so that the kept messages use at most `target` tokens.
///
/// `tail` are the messages after the current cut, oldest first, with the tokens each takes in
/// the prompt. Returns how many of them to fold into the summary (0: nothing to do because
/// they fit in `limit`). At least the newest message is always kept.
pub fn plan_roll(tail_tokens: &[usize], limit: usize, target: usize) -> usize {
    let total: usize = tail_tokens.iter().sum();
    if total <= limit {
        return 0;
    }
    let mut kept = 0;
    let mut keep_from = tail_tokens.len();
    for (i, t) in tail_tokens.iter().enumerate().rev() {
        if kept + t > target && keep_from < tail_tokens.len() {
            break;
        }
        kept += t;
        keep_from = i;
    }
    keep_from
}

/// Tokens a stored message takes in a prompt.
pub fn message_tokens(m: &Message, count: &dyn Fn(&str) -> usize) -> usize {
    let t = if m.token_count > 0 {
        m.token_count as usize
    } else {
        count(&m.text)
    };
    t + PER_MESSAGE_OVERHEAD
}

fn day(ts: Timestamp) -> String {
    ts.to_string().chars().take(10).collect()
}

/// How much a sentence the user said is worth keeping.
fn salience(sentence: &str) -> f32 {
    let words = sentence.split_whitespace().count();
    if words < 4 {
        return 0.0;
    }
    let mut s = 0.0;
    if !extract::extract(sentence).is_empty() {
        s += 2.0; // a fact about the user's life
    }
    let lower = sentence.to_lowercase();
    if [" i ", "i'm", "i've", "i'll", " my ", "me ", "we "]
        .iter()
        .any(|w| format!(" {lower}").contains(w))
    {
        s += 0.5;
    }
    // Names, places and numbers carry information.
    let named = sentence
        .split_whitespace()
        .skip(1)
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase) && *w != "I")
        .count();
    s += 0.3 * named.min(3) as f32;
    if sentence.chars().any(|c| c.is_ascii_digit()) {
        s += 0.3;
    }
    if sentence.trim_end().ends_with('?') {
        s -= 0.3;
    }
    s + (words.min(25) as f32) / 50.0
}

/// Folds `chunk` (the messages the cut passes, oldest first) into `previous`, keeping the result
/// within `budget` tokens. Newer lines win when the budget is short, and lines keep their
/// chronological order. Empty when nothing is worth keeping.
pub fn summarize(
    previous: Option<&str>,
    chunk: &[Message],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> String {
    // Candidate sentences of the user, in order.
    let mut candidates: Vec<(usize, f32, String)> = Vec::new();
    for m in chunk.iter().filter(|m| m.role == Role::User) {
        for s in m.text.unicode_sentences() {
            let s = s.trim();
            let score = salience(s);
            if score >= 0.8 {
                let clipped: String = s.chars().take(240).collect();
                candidates.push((
                    candidates.len(),
                    score,
                    format!("- {}: the user said \"{clipped}\"", day(m.created_at)),
                ));
            }
        }
    }
    let old_lines: Vec<&str> = previous
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("- "))
        .collect();
    // New lines get up to three quarters of the budget, best first; old lines fill the rest,
    // newest first.
    let mut by_score = candidates.clone();
    by_score.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut used = count(HEADING) + 1;
    let mut chosen = Vec::new();
    for (i, _, line) in by_score {
        let t = count(&line) + 1;
        if used + t > budget * 3 / 4 {
            continue;
        }
        used += t;
        chosen.push((i, line));
    }
    chosen.sort_by_key(|(i, _)| *i);
    let mut kept_old = Vec::new();
    for line in old_lines.iter().rev() {
        let t = count(line) + 1;
        if used + t > budget {
            break;
        }
        used += t;
        kept_old.push(*line);
    }
    kept_old.reverse();
    if kept_old.is_empty() && chosen.is_empty() {
        return String::new();
    }
    let mut out = String::from(HEADING);
    for line in kept_old
        .into_iter()
        .map(str::to_owned)
        .chain(chosen.into_iter().map(|(_, l)| l))
    {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use nexus_common::{ConversationId, MessageId};

    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn msg(role: Role, text: &str, day: i64) -> Message {
        Message {
            id: MessageId::new(),
            conversation_id: ConversationId::new(),
            role,
            text: text.into(),
            created_at: Timestamp(1_763_683_200_000 + day * 86_400_000),
            token_count: 0,
        }
    }

    #[test]
    fn nothing_rolls_while_the_tail_fits() {
        assert_eq!(plan_roll(&[10, 10, 10], 30, 15), 0);
    }

    #[test]
    fn a_roll_keeps_about_the_target_and_at_least_the_newest_message() {
        // 10 messages of 10 tokens, limit 60, target 30: keep the last 3.
        assert_eq!(plan_roll(&[10; 10], 60, 30), 7);
        // One huge newest message is still kept.
        assert_eq!(plan_roll(&[10, 10, 500], 60, 30), 2);
    }

    #[test]
    fn dates_are_civil_days() {
        assert_eq!(day(Timestamp(0)), "1970-01-01");
        assert_eq!(day(Timestamp(1_763_683_200_000)), "2025-11-21");
        assert_eq!(day(Timestamp(951_782_400_000)), "2000-02-29");
    }

    #[test]
    fn summaries_keep_what_the_user_told_and_skip_small_talk() {
        let chunk = vec![
            msg(Role::User, "Hi!", 0),
            msg(Role::Assistant, "Hello! How are you today?", 0),
            msg(
                Role::User,
                "I'm good. My sister Anna is visiting from Lisbon next week.",
                0,
            ),
            msg(Role::Assistant, "How lovely!", 0),
            msg(Role::User, "ok", 1),
        ];
        let s = summarize(None, &chunk, 200, &words);
        assert!(s.starts_with(HEADING));
        assert!(
            s.contains("My sister Anna is visiting from Lisbon next week."),
            "{s}"
        );
        assert!(s.contains("2025-11-21"), "{s}");
        assert!(!s.contains("Hi!") && !s.contains("How lovely") && !s.contains("\"ok\""));
    }

    #[test]
    fn rolling_keeps_old_lines_in_order_and_stays_within_budget() {
        let first = summarize(
            None,
            &[msg(
                Role::User,
                "I work as a nurse at the Lyon hospital.",
                0,
            )],
            60,
            &words,
        );
        let second = summarize(
            Some(&first),
            &[msg(Role::User, "I adopted a cat named Miso yesterday.", 3)],
            60,
            &words,
        );
        let nurse = second.find("nurse").expect("old line kept");
        let miso = second.find("Miso").expect("new line added");
        assert!(nurse < miso, "{second}");
        let mut s = None;
        for i in 0..50 {
            let next = summarize(
                s.as_deref(),
                &[msg(
                    Role::User,
                    &format!("I visited museum number {i} in Paris with my friend Tom."),
                    i,
                )],
                60,
                &words,
            );
            s = Some(next);
        }
        let s = s.expect("summary");
        assert!(words(&s) <= 60, "{} words: {s}", words(&s));
        assert!(s.contains("museum number 49"), "the newest survives: {s}");
    }
}
