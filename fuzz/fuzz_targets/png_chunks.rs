//! Any bytes as a PNG: the chunk reader must never panic or over-allocate, and rewriting the
//! card chunks of a valid PNG must keep every other chunk and read back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_companion::cards::png;

fuzz_target!(|bytes: &[u8]| {
    let Ok(chunks) = png::chunks(bytes) else {
        return;
    };
    let mut valid = true;
    let mut others = Vec::new();
    for chunk in chunks {
        match chunk {
            Ok(c) => {
                let _ = c.text();
                if !c.is_card_text() {
                    others.push(c.raw);
                }
            }
            Err(_) => valid = false,
        }
    }
    let rewritten = png::with_texts(bytes, &[("ccv3", b"eyJhIjoxfQ==")]);
    assert_eq!(rewritten.is_ok(), valid);
    if let Ok(out) = rewritten {
        let texts = png::card_texts(&out).expect("our output is a valid PNG");
        assert_eq!(texts, vec![("ccv3", &b"eyJhIjoxfQ=="[..])]);
        let stripped = png::without_card(&out).expect("strip");
        let kept: Vec<&[u8]> = png::chunks(&stripped)
            .expect("signature")
            .map(|c| c.expect("valid").raw)
            .collect();
        assert_eq!(kept, others, "other chunks are copied byte for byte");
    }
});
