//! Prompt assembly for companions made from a character card.
//!
//! Layout of the system message (empty parts left out, separated by blank lines):
//! 1. lorebook entries with `position: before_char`;
//! 2. the card's `system_prompt` with `{{original}}` replaced by our default system prompt (the
//!    persona prompt the engine would use without a card). An empty card prompt means "use the
//!    default"; a card prompt that does not use `{{original}}` replaces the default, and the
//!    character's description, personality and speaking style follow it;
//! 3. `Scenario: ...`;
//! 4. lorebook entries with `position: after_char`;
//! 5. the example dialogue (`mes_example`), whole `<START>` blocks while they fit in an eighth of
//!    the budget.
//!
//! Lorebook entries get at most a quarter of the budget (and the book's own `token_budget`).
//! `post_history_instructions` become a system message after the history, right before the
//! user's new message. `{{char}}` (the card's `nickname`, else the companion's name), `{{user}}`
//! and the V1 forms `<BOT>`/`<USER>` are replaced everywhere, case-insensitively.
//! Everything added is counted: the history gets what is left of the budget.

use nexus_inference::ChatMessage;
use nexus_store::{Companion, Message};
use serde_json::{Map, Value};

use crate::cards::data::str_field;
use crate::cards::lorebook::{Lorebook, Position};
use crate::prompt::{PER_MESSAGE_OVERHEAD, PromptPlan, assemble};

/// What `{{user}}` becomes (Nexus has no user name setting yet).
pub const DEFAULT_USER_NAME: &str = "User";

/// Share of the budget the lorebook may use (1/N).
const LORE_SHARE: usize = 4;
/// Share of the budget the example dialogue may use (1/N).
const EXAMPLES_SHARE: usize = 8;

/// The name `{{char}}` stands for: the card's `nickname` if set, else the companion's name.
pub fn char_name(companion: &Companion) -> &str {
    match &companion.card {
        Some(Value::Object(data)) => {
            let nick = str_field(data, "nickname").trim();
            if nick.is_empty() {
                &companion.name
            } else {
                nick
            }
        }
        _ => &companion.name,
    }
}

/// The greeting as shown to the user, with the macros replaced.
pub fn greeting(companion: &Companion) -> String {
    expand_macros(&companion.greeting, char_name(companion), DEFAULT_USER_NAME)
}

/// Replaces `{{char}}`/`<BOT>` by `char` and `{{user}}`/`<USER>` by `user`, ignoring ASCII case.
pub fn expand_macros(text: &str, char: &str, user: &str) -> String {
    replace_tokens(
        text,
        &[
            ("{{char}}", char),
            ("<bot>", char),
            ("{{user}}", user),
            ("<user>", user),
        ],
    )
}

/// Single-pass, ASCII-case-insensitive replacement (replacements are not scanned again).
fn replace_tokens(text: &str, tokens: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        let hit = (bytes[i] == b'{' || bytes[i] == b'<')
            .then(|| {
                tokens.iter().find(|(token, _)| {
                    bytes
                        .get(i..i + token.len())
                        .is_some_and(|s| s.eq_ignore_ascii_case(token.as_bytes()))
                })
            })
            .flatten();
        match hit {
            // Tokens are ASCII, so `i` and `i + token.len()` are character boundaries.
            Some((token, value)) => {
                out.push_str(&text[last..i]);
                out.push_str(value);
                i += token.len();
                last = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[last..]);
    out
}

fn contains_token(text: &str, token: &str) -> bool {
    text.to_ascii_lowercase().contains(token)
}

/// The example dialogue: whole `<START>`-separated blocks, from the first, while they fit in
/// `budget` tokens.
fn examples(mes_example: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in mes_example.lines() {
        if line.trim().eq_ignore_ascii_case("<start>") {
            if !current.trim().is_empty() {
                blocks.push(current.trim().to_owned());
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        blocks.push(current.trim().to_owned());
    }
    let mut used = 0;
    let mut kept = Vec::new();
    for block in blocks {
        let cost = count(&block);
        if used + cost > budget {
            break;
        }
        used += cost;
        kept.push(block);
    }
    kept.join("\n\n")
}

/// The character's own fields, for a card system prompt that replaces our default one.
fn character_definition(companion: &Companion) -> String {
    let mut parts = Vec::new();
    if !companion.description.is_empty() {
        parts.push(companion.description.clone());
    }
    if !companion.personality.is_empty() {
        parts.push(format!(
            "{}'s personality: {}",
            companion.name, companion.personality
        ));
    }
    if !companion.speaking_style.is_empty() {
        parts.push(format!("Speaking style: {}", companion.speaking_style));
    }
    parts.join("\n")
}

/// The system message and post-history instructions of a card companion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPrompt {
    /// The whole system message.
    pub system: String,
    /// Instructions placed after the history, if the card has any.
    pub post_history: Option<String>,
    /// Indexes (in the book) of the lorebook entries injected.
    pub lore_entries: Vec<usize>,
}

/// Builds the system message and post-history instructions of a companion with a card
/// (`data`), given the default system prompt, the recent messages (chronological, the user's
/// new message last) and the prompt's token budget.
pub fn card_prompt(
    companion: &Companion,
    data: &Map<String, Value>,
    default_system: &str,
    recent: &[&str],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> CardPrompt {
    let card_system = str_field(data, "system_prompt").trim();
    let head = if card_system.is_empty() {
        default_system.to_owned()
    } else if contains_token(card_system, "{{original}}") {
        replace_tokens(card_system, &[("{{original}}", default_system)])
    } else {
        let definition = character_definition(companion);
        if definition.is_empty() {
            card_system.to_owned()
        } else {
            format!("{card_system}\n\n{definition}")
        }
    };
    let scenario = str_field(data, "scenario").trim();
    let scenario = (!scenario.is_empty()).then(|| format!("Scenario: {scenario}"));

    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut lore_entries = Vec::new();
    if let Some(book) = Lorebook::from_data(data) {
        for e in book.activate(recent, budget / LORE_SHARE, count) {
            lore_entries.push(e.index);
            match e.position {
                Position::BeforeChar => before.push(e.content.clone()),
                Position::AfterChar => after.push(e.content.clone()),
            }
        }
    }
    let mes_example = str_field(data, "mes_example");
    let examples = examples(mes_example, budget / EXAMPLES_SHARE, count);
    let examples = (!examples.is_empty()).then(|| format!("Example dialogue:\n{examples}"));

    let parts: Vec<String> = [
        (!before.is_empty()).then(|| before.join("\n")),
        Some(head),
        scenario,
        (!after.is_empty()).then(|| after.join("\n")),
        examples,
    ]
    .into_iter()
    .flatten()
    .filter(|p| !p.trim().is_empty())
    .collect();
    let char = char_name(companion);
    let system = expand_macros(&parts.join("\n\n"), char, DEFAULT_USER_NAME);
    let post = str_field(data, "post_history_instructions").trim();
    // `{{original}}` here would be our default post-history instructions: there are none.
    let post = expand_macros(
        &replace_tokens(post, &[("{{original}}", "")]),
        char,
        DEFAULT_USER_NAME,
    );
    CardPrompt {
        system,
        post_history: (!post.trim().is_empty()).then(|| post.trim().to_owned()),
        lore_entries,
    }
}

/// The prompt for one reply of `companion`: for a companion without a card exactly
/// [`assemble`] of `default_system`; with a card, the card's system message (see the module
/// documentation) and its post-history instructions, all within `budget` tokens.
pub fn assemble_for(
    companion: &Companion,
    default_system: &str,
    history: &[Message],
    user_text: &str,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> PromptPlan {
    let Some(Value::Object(data)) = &companion.card else {
        return assemble(default_system, history, user_text, budget, count);
    };
    let mut recent: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    recent.push(user_text);
    let card = card_prompt(companion, data, default_system, &recent, budget, count);
    let post_tokens = card
        .post_history
        .as_deref()
        .map_or(0, |p| count(p) + PER_MESSAGE_OVERHEAD);
    let mut plan = assemble(
        &card.system,
        history,
        user_text,
        budget.saturating_sub(post_tokens),
        count,
    );
    if let Some(post) = card.post_history {
        let at = plan.messages.len().saturating_sub(1);
        plan.messages.insert(at, ChatMessage::new("system", post));
        plan.estimated_tokens += post_tokens;
    }
    plan
}

#[cfg(test)]
mod tests {
    use nexus_common::{CompanionId, Timestamp};
    use serde_json::json;

    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn companion(card: Value) -> Companion {
        Companion {
            id: CompanionId::new(),
            name: "Mira".into(),
            description: "{{char}} is a gardener who helps {{user}}.".into(),
            personality: "warm".into(),
            speaking_style: String::new(),
            greeting: "*{{char}} waves at {{User}}*".into(),
            card: Some(card),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn macros_are_replaced_case_insensitively_and_once() {
        assert_eq!(
            expand_macros(
                "{{char}}/{{CHAR}}/<BOT> meets {{user}}/<User>",
                "A",
                "{{user}}"
            ),
            "A/A/A meets {{user}}/{{user}}"
        );
        assert_eq!(expand_macros("日本 {{char}} é", "ß", "u"), "日本 ß é");
        assert_eq!(expand_macros("{{char", "A", "u"), "{{char");
        let c = companion(json!({"nickname": "Mi"}));
        assert_eq!(greeting(&c), "*Mi waves at User*");
    }

    #[test]
    fn the_card_system_prompt_wraps_or_replaces_the_default() {
        let c = companion(json!({
            "system_prompt": "Roleplay as {{char}}. {{original}}",
            "scenario": "A garden at dawn.",
            "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Hello!\n<START>\n{{user}}: Bye\n{{char}}: See you",
            "post_history_instructions": "Stay in character as {{char}}. {{original}}",
        }));
        let data = c.card.as_ref().and_then(Value::as_object).expect("data");
        let p = card_prompt(&c, data, "DEFAULT about {{char}}", &["hi"], 1000, &words);
        assert_eq!(
            p.system,
            "Roleplay as Mira. DEFAULT about Mira\n\nScenario: A garden at dawn.\n\n\
             Example dialogue:\nUser: Hi\nMira: Hello!\n\nUser: Bye\nMira: See you"
        );
        assert_eq!(
            p.post_history.as_deref(),
            Some("Stay in character as Mira.")
        );

        let small = card_prompt(&c, data, "D", &["hi"], 40, &words);
        assert!(
            small.system.contains("Hello!") && !small.system.contains("Bye"),
            "{small:?}"
        );

        let replace = companion(json!({"system_prompt": "You are {{char}}."}));
        let data = replace
            .card
            .as_ref()
            .and_then(Value::as_object)
            .expect("data");
        let p = card_prompt(&replace, data, "DEFAULT", &["hi"], 1000, &words);
        assert_eq!(
            p.system,
            "You are Mira.\n\nMira is a gardener who helps User.\nMira's personality: warm"
        );
        assert_eq!(p.post_history, None);
    }

    #[test]
    fn post_history_instructions_go_right_before_the_user_turn_within_the_budget() {
        let c = companion(json!({"post_history_instructions": "Answer in one sentence."}));
        let plan = assemble_for(&c, "SYS", &[], "hello there", 1000, &words);
        let roles: Vec<&str> = plan.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, vec!["system", "system", "user"]);
        assert_eq!(plan.messages[1].content, "Answer in one sentence.");
        assert_eq!(
            plan.estimated_tokens,
            1 + 2 + 2 * PER_MESSAGE_OVERHEAD + 4 + PER_MESSAGE_OVERHEAD
        );
        // Without a card: exactly the plain assembly.
        let mut plain = c.clone();
        plain.card = None;
        assert_eq!(
            assemble_for(&plain, "SYS", &[], "hi", 1000, &words),
            assemble("SYS", &[], "hi", 1000, &words)
        );
    }

    #[test]
    fn lorebook_entries_are_placed_by_position() {
        let c = companion(json!({
            "character_book": {"entries": [
                {"keys": ["rose"], "content": "Roses are {{char}}'s favourite.", "position": "after_char"},
                {"keys": ["rose"], "content": "BEFORE", "position": "before_char"},
                {"keys": ["tulip"], "content": "TULIP"},
            ]}
        }));
        let data = c.card.as_ref().and_then(Value::as_object).expect("data");
        let p = card_prompt(&c, data, "DEFAULT", &["I love a rose"], 1000, &words);
        assert_eq!(p.system, "BEFORE\n\nDEFAULT\n\nRoses are Mira's favourite.");
        assert_eq!(p.lore_entries, vec![0, 1]);
    }
}
