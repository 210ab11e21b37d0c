//! Rule-based extraction of durable facts from what the user says.
//!
//! The default chat model has 135M parameters: asked to list facts, it invents and misses more
//! than it finds. Rules catch the forms people actually use to tell a companion about their
//! life ("my sister Anna…", "I live in…", "I can't stand…", "I'm nervous about…") with high
//! precision, and each candidate carries a normalized `subject` so that a later fact about the
//! same thing ("I moved to Berlin") supersedes the old one. Embeddings then deduplicate
//! paraphrases (see `super::MemoryManager`). Measured on hand-written scripted conversations in
//! `tests/fixtures/memory_conversations.json` (precision and recall in docs/BENCHMARKS.md).

use std::sync::OnceLock;

use nexus_store::MemoryKind;
use regex::{Captures, Regex, RegexBuilder};

/// A fact found in a message, before deduplication.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// What it is about.
    pub kind: MemoryKind,
    /// Normalized key; candidates with the same subject supersede each other.
    pub subject: String,
    /// The fact as one third-person sentence ("The user lives in Lyon.").
    pub text: String,
    /// 0..1.
    pub importance: f32,
}

const RELATIONS: &str = "best friend|sister|brother|mom|mother|mum|dad|father|wife|husband|partner|boyfriend|girlfriend|fianc[ée]e?|son|daughter|friend|boss|colleague|coworker|co-worker|roommate|flatmate|grandmother|grandma|grandfather|grandpa|aunt|uncle|cousin|niece|nephew|teacher|therapist|doctor|neighbou?r|dog|cat|puppy|kitten|pet|horse|rabbit|hamster|parrot";

const FEELINGS: &str = "nervous|anxious|worried|scared|afraid|terrified|excited|thrilled|happy|glad|sad|unhappy|lonely|stressed|proud|angry|mad|furious|upset|depressed|down|stupid|guilty|ashamed|embarrassed|overwhelmed|exhausted|burned out|burnt out|tired|grateful|thankful|hopeful|hopeless|frustrated|jealous|confused|heartbroken|bored|insecure|relieved";

struct Rule {
    kind: MemoryKind,
    re: Regex,
    build: fn(&Captures<'_>) -> Option<(String, String, f32)>,
}

fn re(pattern: &str) -> Regex {
    let pattern = pattern
        .replace("{REL}", RELATIONS)
        .replace("{FEEL}", FEELINGS);
    // The patterns are constants covered by tests; a typo is a bug caught there.
    RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .build()
        .unwrap_or_else(|e| panic!("memory rule {pattern:?} does not compile: {e}"))
}

fn cap<'a>(c: &'a Captures<'_>, i: usize) -> &'a str {
    c.get(i).map_or("", |m| m.as_str()).trim()
}

/// First person to third person ("my" → "their").
fn third_person(s: &str) -> String {
    let mut out = Vec::new();
    for w in s.split(' ') {
        let lower = w.to_lowercase();
        let rep = match lower.trim_end_matches([',', '.', '!']) {
            "my" => Some("their"),
            "me" => Some("them"),
            "i" => Some("they"),
            "i'm" => Some("they're"),
            "myself" => Some("themselves"),
            "mine" => Some("theirs"),
            "our" => Some("their"),
            "we" => Some("they"),
            "us" => Some("them"),
            _ => None,
        };
        match rep {
            Some(r) => {
                let tail = &w[w.trim_end_matches([',', '.', '!']).len()..];
                out.push(format!("{r}{tail}"));
            }
            None => out.push(w.to_owned()),
        }
    }
    out.join(" ")
}

/// Cuts a captured clause at words that start another clause or only hedge.
fn clause(s: &str) -> String {
    let mut s = s
        .trim()
        .trim_end_matches(['.', '!', '?', ',', ';'])
        .to_owned();
    for stop in [
        " though",
        " but ",
        " because ",
        " and i ",
        " so i ",
        ", but",
        ", because",
        ", and i",
    ] {
        if let Some(i) = s.to_lowercase().find(stop) {
            s.truncate(i);
        }
    }
    for tail in [
        " now",
        " anymore",
        " too",
        " as well",
        " lately",
        " these days",
    ] {
        if s.to_lowercase().ends_with(tail) {
            let n = s.len() - tail.len();
            s.truncate(n);
        }
    }
    s.trim().trim_end_matches(',').to_owned()
}

fn key(s: &str) -> String {
    let stop = [
        "a", "an", "the", "my", "to", "of", "in", "on", "at", "with", "really", "very",
    ];
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !stop.contains(w))
        .take(3)
        .collect::<Vec<_>>()
        .join("_")
}

fn relation(s: &str) -> String {
    match s.to_lowercase().as_str() {
        "mum" | "mom" => "mother".into(),
        "dad" => "father".into(),
        "grandma" => "grandmother".into(),
        "grandpa" => "grandfather".into(),
        "co-worker" | "coworker" => "colleague".into(),
        "flatmate" => "roommate".into(),
        other => other.replace('é', "e"),
    }
}

fn is_pronoun_object(s: &str) -> bool {
    let first = s.split_whitespace().next().unwrap_or("").to_lowercase();
    matches!(
        first.as_str(),
        "it" | "that" | "this" | "them" | "you" | "him" | "her" | "those" | "these" | ""
    )
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        use MemoryKind::*;
        vec![
            // --- names ---
            Rule { kind: Fact, re: re(r"\b(?:my name is|i am called|i'm called|(?:please )?call me)\s+((?-i:[A-Z])[\w'-]+)"), build: |c| {
                Some(("user.name".into(), format!("The user's name is {}.", cap(c, 1)), 0.9))
            }},
            // "Hi, I'm Sam." (a capitalized word alone after "I'm": a name, not "I'm Tired of…")
            Rule { kind: Fact, re: re(r"(?:^|[.!,]\s*|\bhi\s+|\bhello\s+|\bhey\s+)(?:i'm|i am) ((?-i:[A-Z])(?-i:[a-z]+)(?:-(?-i:[A-Z])(?-i:[a-z]+))?)\s*(?:[.!,;]|$)"), build: |c| {
                let name = cap(c, 1);
                if matches!(name, "Fine" | "Good" | "Okay" | "Ok" | "Back" | "Here" | "Home" | "Done" | "Sorry" | "Tired" | "Great" | "Well" | "Ready" | "Bored" | "Sick" | "Sad" | "Happy") {
                    return None;
                }
                Some(("user.name".into(), format!("The user's name is {name}."), 0.9))
            }},
            // "my sister is called Anna", "my dog's name is Rex"
            Rule { kind: Person, re: re(r"\bmy ({REL})(?:'s name)? (?:is called|is named|is|was called|was named|was) ((?-i:[A-Z])[\w'-]+)\b"), build: |c| {
                let rel = relation(cap(c, 1));
                let name = cap(c, 2);
                Some((format!("{rel}.name"), format!("The user's {rel} is called {name}."), 0.7))
            }},
            // "my sister Anna is getting married", "my boss Karen"
            Rule { kind: Person, re: re(r"\bmy ({REL}),? ((?-i:[A-Z])[\w'-]+)\b"), build: |c| {
                let rel = relation(cap(c, 1));
                let name = cap(c, 2);
                Some((format!("{rel}.name"), format!("The user's {rel} is called {name}."), 0.7))
            }},
            // "we have a dog called Biscuit", "I have a cat named Miso"
            Rule { kind: Person, re: re(r"\b(?:i|we) (?:have|got|adopted) an? (?:new )?({REL}) (?:called|named) ((?-i:[A-Z])[\w'-]+)"), build: |c| {
                let rel = relation(cap(c, 1));
                let name = cap(c, 2);
                Some((format!("{rel}.name"), format!("The user has a {rel} called {name}."), 0.7))
            }},
            Rule { kind: Person, re: re(r"^(?:her|his) name (?:is|was) ((?-i:[A-Z])[\w'-]+)"), build: |c| {
                let name = cap(c, 1);
                Some((format!("person:{}", name.to_lowercase()), format!("The user mentioned someone called {name}."), 0.5))
            }},
            // --- where, what, who ---
            Rule { kind: Fact, re: re(r"\bi (?:live|am living|'m living) in ((?-i:[A-Z])[\w' -]+)"), build: |c| {
                Some(("user.home".into(), format!("The user lives in {}.", clause(cap(c, 1))), 0.7))
            }},
            Rule { kind: Fact, re: re(r"\b(?:i|we) (?:just |recently )?(?:moved|have moved|'ve moved) to ((?-i:[A-Z])[\w' -]+)"), build: |c| {
                let place = clause(cap(c, 1));
                let place = place.split(" last ").next().unwrap_or(&place).to_owned();
                Some(("user.home".into(), format!("The user lives in {place} (moved there recently)."), 0.7))
            }},
            Rule { kind: Fact, re: re(r"\bi(?:'m| am) (?:originally )?from ((?-i:[A-Z])[\w' -]+)"), build: |c| {
                Some(("user.origin".into(), format!("The user is from {}.", clause(cap(c, 1)).trim_end_matches(" originally")), 0.6))
            }},
            Rule { kind: Fact, re: re(r"\bi (?:work|am working|'m working) as (an? [\w' -]+)"), build: |c| {
                Some(("user.job".into(), format!("The user works as {}.", clause(cap(c, 1))), 0.7))
            }},
            Rule { kind: Fact, re: re(r"\bi(?:'m| am) an? ((?:[\w-]+ ){0,2}(?:engineer|developer|programmer|nurse|teacher|doctor|designer|student|chef|cook|lawyer|artist|writer|manager|scientist|researcher|accountant|consultant|farmer|driver|pilot|musician|photographer|journalist|pharmacist|therapist|mechanic|electrician|plumber|carpenter|architect|professor|lecturer|librarian|cashier|waiter|waitress|barista|freelancer|entrepreneur|vet|veterinarian|dentist|paramedic|firefighter|police officer|soldier))\b"), build: |c| {
                Some(("user.job".into(), format!("The user is a {}.", cap(c, 1)), 0.7))
            }},
            Rule { kind: Fact, re: re(r"\bi(?:'m| am) (vegetarian|vegan|pescatarian|diabetic|pregnant|retired|married|single|divorced|widowed|engaged|deaf|blind|autistic|dyslexic|left-handed|allergic to [\w -]+|lactose intolerant|gluten intolerant)"), build: |c| {
                let what = clause(cap(c, 1));
                Some((format!("user.is:{}", key(&what)), format!("The user is {what}."), 0.7))
            }},
            Rule { kind: Fact, re: re(r"\bi(?:'m| am) (\d{1,3}) (?:years? old|yo)\b"), build: |c| {
                Some(("user.age".into(), format!("The user is {} years old.", cap(c, 1)), 0.6))
            }},
            Rule { kind: Fact, re: re(r"\bmy birthday is (?:on )?([\w ]+)"), build: |c| {
                Some(("user.birthday".into(), format!("The user's birthday is on {}.", clause(cap(c, 1))), 0.8))
            }},
            Rule { kind: Fact, re: re(r"\bi (?:study|am studying|'m studying) ([\w ]+?)(?: at ((?-i:[A-Z])[\w ]+))?[.!]?$"), build: |c| {
                let at = cap(c, 2);
                let text = if at.is_empty() {
                    format!("The user studies {}.", clause(cap(c, 1)))
                } else {
                    format!("The user studies {} at {}.", cap(c, 1), clause(at))
                };
                Some(("user.study".into(), text, 0.6))
            }},
            Rule { kind: Fact, re: re(r"\bi (?:mostly |usually )?work from home\b"), build: |_| {
                Some(("user.work_mode".into(), "The user works from home most days.".into(), 0.4))
            }},
            Rule { kind: Fact, re: re(r"\b(?:i|we) have (\w+) (kids|children|sons|daughters|dogs|cats|siblings|brothers|sisters)\b"), build: |c| {
                let n = cap(c, 1).to_lowercase();
                if n == "no" || n == "any" {
                    return Some((format!("user.has:{}", cap(c, 2).to_lowercase()), format!("The user has no {}.", cap(c, 2)), 0.6));
                }
                Some((format!("user.has:{}", cap(c, 2).to_lowercase()), format!("The user has {n} {}.", cap(c, 2)), 0.6))
            }},
            // --- activities: "I'm learning to play the cello", "I play chess" ---
            Rule { kind: Fact, re: re(r"\bi(?:'m| am|'ve been| have been) (?:learning|studying how) ((?:to )?[\w' -]+)"), build: |c| {
                let what = clause(cap(c, 1));
                if is_pronoun_object(&what) || what.split_whitespace().count() > 8 {
                    return None;
                }
                Some((format!("activity:{}", key(what.trim_start_matches("to "))), format!("The user is learning {}.", third_person(&what)), 0.5))
            }},
            Rule { kind: Fact, re: re(r"\bi (?:play|practi[cs]e) (the (?:piano|guitar|violin|viola|cello|drums|flute|bass|saxophone|trumpet|ukulele|harp|clarinet|trombone|accordion|harmonica)|chess|tennis|football|soccer|basketball|volleyball|golf|hockey|badminton|rugby|cricket|baseball|squash|table tennis|yoga|karate|judo|video games)\b"), build: |c| {
                let what = cap(c, 1).to_lowercase();
                Some((format!("activity:{}", key(&what)), format!("The user plays {what}."), 0.5))
            }},
            // --- preferences ---
            Rule { kind: Preference, re: re(r"\bmy favou?rite ([\w ]+?) (?:is|are) ([\w' -]+)"), build: |c| {
                let what = cap(c, 1).to_lowercase();
                Some((format!("favorite:{}", key(&what)), format!("The user's favorite {what} is {}.", clause(cap(c, 2))), 0.5))
            }},
            Rule { kind: Preference, re: re(r"\bi (?:really |absolutely |just |actually |totally |kind of |kinda )?(love|like|enjoy|adore|prefer|hate|dislike|detest|can't stand|cannot stand|can not stand|don't (?:really )?like|do not (?:really )?like|don't (?:really )?enjoy|am into|'m into|am a big fan of|'m a big fan of)\s+(.+)"), build: |c| {
                let verb = cap(c, 1).to_lowercase();
                let object = clause(cap(c, 2));
                if is_pronoun_object(&object) || object.split_whitespace().count() > 10 {
                    return None;
                }
                let positive = !(verb.contains("hate") || verb.contains("dislike") || verb.contains("detest") || verb.contains("stand") || verb.contains("don't") || verb.contains("do not"));
                let phrase = match verb.as_str() {
                    "love" | "adore" => "loves",
                    "like" => "likes",
                    "enjoy" => "enjoys",
                    "prefer" => "prefers",
                    "hate" | "detest" => "hates",
                    "dislike" => "dislikes",
                    v if v.contains("stand") => "can't stand",
                    v if v.contains("into") || v.contains("fan") => "is into",
                    _ => "does not like",
                };
                let strong = matches!(phrase, "loves" | "hates" | "can't stand");
                let object_text = third_person(&object);
                let _ = positive;
                Some((format!("pref:{}", key(&object)), format!("The user {phrase} {object_text}."), if strong { 0.5 } else { 0.4 }))
            }},
            // --- feelings ---
            Rule { kind: Feeling, re: re(r"\bi(?:'m| am| feel| am feeling|'m feeling|'ve been feeling|have been feeling)(?: so| really| a bit| very| quite| a little| kind of| pretty| super| still| also| always)* ({FEEL})\b(.*)"), build: |c| {
                let feeling = cap(c, 1).to_lowercase();
                let rest = clause(cap(c, 2));
                let text = if rest.is_empty() {
                    format!("The user feels {feeling}.")
                } else {
                    format!("The user feels {feeling} {}.", third_person(&rest))
                };
                let strong = matches!(feeling.as_str(), "depressed" | "hopeless" | "heartbroken" | "lonely" | "terrified" | "burned out" | "burnt out");
                Some((format!("feeling:{feeling}:{}", key(&rest)), text, if strong { 0.7 } else { 0.5 }))
            }},
            Rule { kind: Feeling, re: re(r"\bi (?:still |really )*miss (.+)"), build: |c| {
                let who = clause(cap(c, 1));
                Some((format!("feeling:miss:{}", key(&who)), format!("The user misses {}.", third_person(&who)), 0.6))
            }},
            // --- plans ---
            Rule { kind: Plan, re: re(r"\bi(?:'m| am) (?:going to|gonna|planning to|planning on|about to|thinking about|thinking of|hoping to|considering) (.+)"), build: |c| {
                let what = clause(cap(c, 1));
                Some((format!("plan:{}", key(&what)), format!("The user is planning to {}.", third_person(&what)), 0.5))
            }},
            Rule { kind: Plan, re: re(r"\bi (?:plan|want|intend|hope|need|have) to (.+)"), build: |c| {
                let what = clause(cap(c, 1));
                Some((format!("plan:{}", key(&what)), format!("The user wants to {}.", third_person(&what)), 0.5))
            }},
            Rule { kind: Plan, re: re(r"\bi(?:'ll| will) (.+)"), build: |c| {
                let what = clause(cap(c, 1));
                Some((format!("plan:{}", key(&what)), format!("The user will {}.", third_person(&what)), 0.5))
            }},
            Rule { kind: Plan, re: re(r"\bwe(?:'re| are) (?:throwing|having|hosting|planning|organizing|going to|taking) (.+)"), build: |c| {
                let what = clause(cap(c, 1));
                Some((format!("plan:{}", key(&what)), format!("The user and their family are planning {}.", third_person(&what)), 0.5))
            }},
            Rule { kind: Plan, re: re(r"\bfor (?:a|our|my) (?:trip|holiday|vacation|visit) to ((?-i:[A-Z])[\w ]+)"), build: |c| {
                let place = clause(cap(c, 1));
                Some((format!("plan:trip_{}", key(&place)), format!("The user is planning a trip to {place}."), 0.6))
            }},
            // --- events ---
            Rule { kind: Event, re: re(r"\bi (?:just |recently |finally |only )?(started|began|finished|failed|passed|got|lost|broke up|quit|graduated|ran|won|bought|sold|met|adopted|crashed|broke|completed|signed|moved out|retired)\b(.*)"), build: |c| {
                let verb = cap(c, 1).to_lowercase();
                let rest = clause(cap(c, 2));
                if verb == "got" && rest.split_whitespace().next().is_some_and(|w| matches!(w, "it" | "that" | "this" | "to")) {
                    return None;
                }
                let heavy = matches!(verb.as_str(), "lost" | "broke up" | "failed" | "quit" | "graduated" | "retired" | "crashed");
                Some((format!("event:{verb}:{}", key(&rest)), format!("The user {verb} {}.", third_person(&rest)).replace("  ", " "), if heavy { 0.8 } else { 0.6 }))
            }},
            Rule { kind: Event, re: re(r"\bmy ((?:[\w-]+ )?(?:{REL})(?: (?-i:[A-Z])[\w-]+)?) (is getting married|got married|passed away|died|had a baby|is pregnant|is sick|is ill|is in (?:the )?hospital|got engaged|moved out|lost (?:his|her|their) job)(.*)"), build: |c| {
                let who = cap(c, 1);
                let what = cap(c, 2);
                let rest = clause(cap(c, 3));
                let heavy = what.contains("passed") || what.contains("died") || what.contains("hospital") || what.contains("sick");
                Some((format!("event:{}:{}", key(who), key(what)), format!("The user's {who} {what}{}{rest}.", if rest.is_empty() { "" } else { " " }), if heavy { 0.9 } else { 0.7 }))
            }},
            Rule { kind: Event, re: re(r"\bmy ((?:[\w-]+ )?(?:{REL}) (?-i:[A-Z])[\w-]+) turns (\w+)(.*)"), build: |c| {
                let who = cap(c, 1);
                Some((format!("event:birthday:{}", key(who)), format!("The user's {who} turns {}{}.", cap(c, 2), clause(cap(c, 3)).split_once(' ').map_or(String::new(), |_| format!(" {}", clause(cap(c, 3))))), 0.6))
            }},
            Rule { kind: Event, re: re(r"\bmy ([\w ]{2,30}?) (?:start|starts|begin|begins|is due|are due) (on|next|this|in|tomorrow|today)(.*)"), build: |c| {
                let what = cap(c, 1);
                let when = format!("{} {}", cap(c, 2), clause(cap(c, 3)));
                Some((format!("event:{}", key(what)), format!("The user's {what} start {}.", when.trim()), 0.6))
            }},
        ]
    })
}

/// Splits a message into sentences and clauses that can hold a statement.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if matches!(ch, '.' | '!' | '?' | '\n') {
            out.push(std::mem::take(&mut cur));
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            if s.ends_with('?') {
                // "I'm 29 years old, isn't it late?" keeps its first clause; a plain question
                // ("Do you like jazz?") states nothing.
                let (head, _) = s.rsplit_once(',')?;
                let head = head.trim();
                let lower = head.to_lowercase();
                return (lower.starts_with("i ")
                    || lower.starts_with("i'")
                    || lower.starts_with("my "))
                .then(|| head.to_owned());
            }
            Some(s)
        })
        // Hypotheticals and reported wishes are not facts.
        .filter(|s| {
            let l = s.to_lowercase();
            !(l.starts_with("if ")
                || l.starts_with("what if")
                || l.contains(" would ")
                || l.starts_with("maybe "))
        })
        .collect()
}

/// The durable facts in one user message.
pub fn extract(user_text: &str) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for sentence in statements(user_text) {
        for rule in rules() {
            for caps in rule.re.captures_iter(&sentence) {
                let Some((subject, text, importance)) = (rule.build)(&caps) else {
                    continue;
                };
                if text.split_whitespace().count() < 3 {
                    continue;
                }
                // One fact per subject per message: the first (most specific) rule wins.
                if out.iter().any(|c| c.subject == subject || c.text == text) {
                    continue;
                }
                out.push(Candidate {
                    kind: rule.kind,
                    subject,
                    text,
                    importance,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_name_after_i_am_is_found_but_not_moods() {
        let names = |t: &str| -> Vec<String> {
            extract(t)
                .into_iter()
                .filter(|c| c.subject == "user.name")
                .map(|c| c.text)
                .collect()
        };
        assert_eq!(
            names("Hi! I'm Sam. How are you?"),
            vec!["The user's name is Sam."]
        );
        assert_eq!(
            names("I am Anne-Marie"),
            vec!["The user's name is Anne-Marie."]
        );
        assert!(names("I'm Fine, thanks.").is_empty());
        assert!(names("I'm tired.").is_empty());
        assert!(names("Honestly I'm Going to the shop later").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        extract(s).into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn every_rule_compiles() {
        assert!(rules().len() > 20);
    }

    #[test]
    fn people_and_names() {
        let c = extract("My sister Anna is getting married in June.");
        assert!(c.iter().any(|c| c.kind == MemoryKind::Person
            && c.subject == "sister.name"
            && c.text.contains("Anna")));
        assert!(
            c.iter()
                .any(|c| c.kind == MemoryKind::Event && c.text.contains("married"))
        );
        assert_eq!(texts("Please call me Alex.")[0], "The user's name is Alex.");
        assert_eq!(extract("My mom is called Maria.")[0].subject, "mother.name");
    }

    #[test]
    fn moving_has_the_same_subject_as_living() {
        assert_eq!(extract("I live in Lyon.")[0].subject, "user.home");
        let moved = extract("I moved to Berlin last month.");
        assert_eq!(moved[0].subject, "user.home");
        assert!(moved[0].text.contains("Berlin") && !moved[0].text.contains("last month"));
    }

    #[test]
    fn preferences_with_polarity_and_pronouns() {
        assert_eq!(
            texts("I really love hiking in the mountains."),
            ["The user loves hiking in the mountains."]
        );
        assert_eq!(
            texts("I don't really like jazz though."),
            ["The user does not like jazz."]
        );
        assert!(
            texts("The apartment is tiny but I love it.").is_empty(),
            "\"it\" is not a preference"
        );
    }

    #[test]
    fn questions_hypotheticals_and_other_people_are_not_facts() {
        for s in [
            "Do you like horror movies?",
            "What do you prefer?",
            "If I were rich I would buy a grand piano.",
            "My boyfriend Tom loves jazz.",
            "She makes the best lasagna.",
            "Maybe I should talk to someone.",
        ] {
            let found: Vec<_> = extract(s)
                .into_iter()
                .filter(|c| c.kind != MemoryKind::Person)
                .collect();
            assert!(found.is_empty(), "{s:?} gave {found:?}");
        }
        assert_eq!(
            texts("I'm 29 years old, isn't it late to start?"),
            ["The user is 29 years old."]
        );
    }

    #[test]
    fn lowercase_words_are_not_names() {
        let c = extract("I broke up with my girlfriend last week.");
        assert!(c.iter().all(|c| c.kind != MemoryKind::Person), "{c:?}");
        assert!(
            extract("My grandmother passed away in the spring.")
                .iter()
                .all(|c| c.kind != MemoryKind::Person)
        );
    }

    #[test]
    fn feelings_keep_their_object_in_third_person() {
        assert_eq!(
            texts("I'm a bit nervous about giving a speech at my sister's wedding."),
            ["The user feels nervous about giving a speech at their sister's wedding."]
        );
    }
}
