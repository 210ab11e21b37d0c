//! Prompt assembly: the persona plus as many recent turns as fit the token budget.

use nexus_inference::ChatMessage;
use nexus_store::Message;

/// Tokens the chat template adds around one message (`<|im_start|>role\n … <|im_end|>\n`).
pub const PER_MESSAGE_OVERHEAD: usize = 5;

/// The messages chosen for one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptPlan {
    /// System prompt, recent history and the new user message, in order.
    pub messages: Vec<ChatMessage>,
    /// History messages included.
    pub history_used: usize,
    /// Older history messages left out for lack of room.
    pub history_dropped: usize,
    /// Estimated prompt size in tokens.
    pub estimated_tokens: usize,
}

/// Builds the prompt from the newest history backwards until `budget` tokens are used.
///
/// `history` is chronological. Stored token counts are used when present, `count` otherwise.
/// The system prompt and the new user message are always included (the model trims as a last
/// resort if even they do not fit).
pub fn assemble(
    system: &str,
    history: &[Message],
    user_text: &str,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> PromptPlan {
    let mut used = count(system) + count(user_text) + 2 * PER_MESSAGE_OVERHEAD;
    let mut start = history.len();
    for (i, m) in history.iter().enumerate().rev() {
        let t = if m.token_count > 0 {
            m.token_count as usize
        } else {
            count(&m.text)
        } + PER_MESSAGE_OVERHEAD;
        if used + t > budget {
            break;
        }
        used += t;
        start = i;
    }
    let mut messages = Vec::with_capacity(history.len() - start + 2);
    messages.push(ChatMessage::new("system", system));
    messages.extend(
        history[start..]
            .iter()
            .map(|m| ChatMessage::new(m.role.as_str(), m.text.clone())),
    );
    messages.push(ChatMessage::new("user", user_text));
    PromptPlan {
        messages,
        history_used: history.len() - start,
        history_dropped: start,
        estimated_tokens: used,
    }
}

#[cfg(test)]
mod tests {
    use nexus_common::{ConversationId, MessageId, Timestamp};
    use nexus_store::Role;

    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn history(n: usize) -> Vec<Message> {
        let conv = ConversationId::new();
        (0..n)
            .map(|i| Message {
                id: MessageId::new(),
                conversation_id: conv,
                role: if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                text: format!("message number {i}"),
                created_at: Timestamp(i as i64),
                token_count: 0,
            })
            .collect()
    }

    #[test]
    fn everything_fits_in_a_large_budget() {
        let p = assemble("be nice", &history(4), "hello there", 1000, &words);
        assert_eq!(p.messages.len(), 6);
        assert_eq!(p.messages[0].role, "system");
        assert_eq!(p.messages[1].content, "message number 0");
        assert_eq!(p.messages[5], ChatMessage::new("user", "hello there"));
        assert_eq!(p.history_dropped, 0);
    }

    #[test]
    fn the_newest_turns_are_kept_within_the_budget() {
        // system 2 + user 2 + 2*5 = 14; each history message 3 + 5 = 8.
        let p = assemble("be nice", &history(10), "hello there", 14 + 8 * 3, &words);
        assert_eq!(p.history_used, 3);
        assert_eq!(p.history_dropped, 7);
        assert_eq!(p.messages[1].content, "message number 7");
        assert!(p.estimated_tokens <= 14 + 8 * 3);
    }

    #[test]
    fn stored_token_counts_are_trusted() {
        let mut h = history(2);
        h[1].token_count = 500;
        let p = assemble("s", &h, "u", 100, &words);
        assert_eq!(
            p.history_used, 0,
            "a message stored as 500 tokens cannot fit in 100"
        );
    }

    #[test]
    fn a_tiny_budget_still_keeps_system_and_user() {
        let p = assemble("be nice", &history(3), "hello", 1, &words);
        assert_eq!(p.messages.len(), 2);
    }
}
