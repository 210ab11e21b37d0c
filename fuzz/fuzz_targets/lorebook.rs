//! A lorebook from arbitrary JSON, activated against arbitrary messages: never panics, and what
//! it returns respects the budget and the enabled flags.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_companion::cards::Lorebook;

fuzz_target!(|bytes: &[u8]| {
    // Layout: JSON, a NUL byte, then messages separated by NUL bytes.
    let mut parts = bytes.split(|&b| b == 0);
    let Some(json) = parts.next() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let Some(book) = Lorebook::from_card(&value) else {
        return;
    };
    let messages: Vec<String> = parts
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let recent: Vec<&str> = messages.iter().map(String::as_str).collect();
    let count = |s: &str| s.split_whitespace().count();
    for budget in [0, 5, 1_000] {
        let active = book.activate(&recent, budget, &count);
        let used: usize = active.iter().map(|e| count(&e.content)).sum();
        assert!(used <= budget.min(book.token_budget.unwrap_or(usize::MAX)));
        assert!(active.iter().all(|e| e.enabled));
    }
});
