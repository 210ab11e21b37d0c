//! Any bytes as a card file: parsing must never panic, and a card that parses must export to
//! JSON and CHARX (and PNG when it came with an image) that parse again to the same data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_common::{CompanionId, Timestamp};
use nexus_companion::cards::{self, AVATAR, data::TOP_LEVEL_KEY};
use nexus_store::CompanionAsset;

fuzz_target!(|bytes: &[u8]| {
    let Ok(card) = cards::parse(bytes) else {
        return;
    };
    let companion = card.to_companion(None, Timestamp(0));
    let assets: Vec<CompanionAsset> = card
        .assets
        .iter()
        .map(|a| CompanionAsset {
            companion_id: CompanionId::new(),
            name: a.name.clone(),
            media_type: a.media_type.clone(),
            bytes: a.bytes.clone(),
        })
        .collect();
    let json = cards::export_json(&companion).expect("JSON export");
    let again = cards::parse(&json).expect("exported JSON parses");
    assert_eq!(again.name(), companion.name);
    assert_eq!(
        again.data.get(TOP_LEVEL_KEY),
        card.data.get(TOP_LEVEL_KEY),
        "top-level fields survive"
    );
    // Exported data only ever adds defaults: every imported field is still there, unchanged,
    // except the authoritative ones the companion took over (and may have trimmed) and the
    // lorebook, whose entries get V3 defaults.
    for (k, v) in &card.data {
        if ![
            "name",
            "description",
            "personality",
            "first_mes",
            "character_book",
        ]
        .contains(&k.as_str())
            && !v.is_null()
        {
            assert_eq!(again.data.get(k), Some(v), "field {k} survives");
        }
    }
    if let Ok(charx) = cards::export_charx(&companion, &assets) {
        let from_charx = cards::parse(&charx).expect("exported CHARX parses");
        assert_eq!(from_charx.name(), companion.name);
    }
    if assets.iter().any(|a| a.name == AVATAR) {
        let png = cards::export_png(&companion, &assets).expect("PNG export");
        let from_png = cards::parse(&png).expect("exported PNG parses");
        assert_eq!(from_png.data, again.data, "PNG and JSON exports agree");
    }
});
