//! Character cards end to end: every format round-trips with every field set (unknown fields and
//! `extensions` included), ccv3 wins over chara, V1 imports, malformed files are clear errors,
//! and a card's lorebook reaches the prompt only when the conversation mentions it.

use std::io::{Cursor, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use nexus_common::{CompanionId, Timestamp};
use nexus_companion::cards::data::TOP_LEVEL_KEY;
use nexus_companion::cards::{
    self, AVATAR, CardError, CardFormat, CardSpec, ImportedCard, MAX_CARD_BYTES, charx, png,
};
use nexus_companion::{ChatSettings, ConversationEngine};
use nexus_inference::Flow;
use nexus_store::{Companion, CompanionAsset, MemoryStore, Store};
use nexus_testing::{FakeLlm, SteppingClock};
use serde_json::{Map, Value, json};

const V1: &str = include_str!("card_fixtures/v1.json");
const V2_FULL: &str = include_str!("card_fixtures/v2_full.json");
const V3_FULL: &str = include_str!("card_fixtures/v3_full.json");

fn value(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

fn data_of(card: &Value) -> Map<String, Value> {
    card["data"].as_object().expect("data").clone()
}

/// The companion of a parsed card and its assets as the store would hold them.
fn companion_of(card: &ImportedCard) -> (Companion, Vec<CompanionAsset>) {
    let c = card.to_companion(None, Timestamp(1_000));
    let assets = card
        .assets
        .iter()
        .map(|a| CompanionAsset {
            companion_id: c.id,
            name: a.name.clone(),
            media_type: a.media_type.clone(),
            bytes: a.bytes.clone(),
        })
        .collect();
    (c, assets)
}

/// The V2 fixture's data plus what V3 requires and V2 lacks: what a V2 card looks like after one
/// export.
fn v2_data_with_v3_defaults() -> Map<String, Value> {
    let mut data = data_of(&value(V2_FULL));
    data.insert("group_only_greetings".into(), json!([]));
    for e in data["character_book"]["entries"]
        .as_array_mut()
        .expect("entries")
    {
        e["use_regex"] = json!(false);
    }
    data.insert(
        TOP_LEVEL_KEY.into(),
        json!({"creatorcomment": "an unknown top-level field from another tool",
               "x_top_unknown": {"nested": [1, 2.5, "three", null, true]}}),
    );
    data
}

#[test]
fn v2_json_round_trips_with_every_field() {
    let card = cards::parse(V2_FULL.as_bytes()).expect("parse");
    assert_eq!((card.format, card.spec), (CardFormat::Json, CardSpec::V2));
    let (c, _) = companion_of(&card);
    assert_eq!(c.name, "Seraphine");
    assert_eq!(
        c.greeting,
        "*{{char}} steps out from behind an oak.* Are you lost, {{user}}?"
    );
    assert_eq!(c.personality, "gentle, protective, wise");

    let exported: Value =
        serde_json::from_slice(&cards::export_json(&c).expect("export")).expect("exported JSON");
    assert_eq!(exported["spec"], "chara_card_v3");
    assert_eq!(exported["spec_version"], "3.0");
    assert_eq!(exported["creatorcomment"], value(V2_FULL)["creatorcomment"]);
    assert_eq!(exported["x_top_unknown"], value(V2_FULL)["x_top_unknown"]);
    assert!(
        exported["data"].get(TOP_LEVEL_KEY).is_none(),
        "internal key not exported"
    );
    assert_eq!(
        exported["data"]["extensions"],
        value(V2_FULL)["data"]["extensions"],
        "extensions survive byte for byte"
    );

    let again = cards::parse(&cards::export_json(&c).expect("export")).expect("reimport");
    assert_eq!(again.spec, CardSpec::V3);
    assert_eq!(again.data, v2_data_with_v3_defaults());
    // A second cycle changes nothing.
    let (c2, _) = companion_of(&again);
    let third = cards::parse(&cards::export_json(&c2).expect("export")).expect("reimport");
    assert_eq!(third.data, again.data);
}

#[test]
fn v3_json_round_trips_identically() {
    let card = cards::parse(V3_FULL.as_bytes()).expect("parse");
    assert_eq!(card.spec, CardSpec::V3);
    let (c, _) = companion_of(&card);
    assert_eq!(c.speaking_style, "soft and slow", "read from our extension");
    let bytes = cards::export_json(&c).expect("export");
    let again = cards::parse(&bytes).expect("reimport");
    assert_eq!(again.data, card.data);
    let mut expected = data_of(&value(V3_FULL));
    expected.insert(TOP_LEVEL_KEY.into(), json!({"x_top_unknown": {"v3": true}}));
    assert_eq!(card.data, expected, "kept exactly as imported");
    let exported: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(
        exported["data"],
        value(V3_FULL)["data"],
        "the whole data object, unchanged"
    );
}

/// A PNG with an extra ancillary chunk, so the test sees that other chunks are kept.
fn picture() -> Vec<u8> {
    let base = png::placeholder("test picture").expect("placeholder");
    png::with_texts(&base, &[("Comment", b"drawn by a test")]).expect("comment")
}

fn non_card_chunks(bytes: &[u8]) -> Vec<Vec<u8>> {
    png::chunks(bytes)
        .expect("signature")
        .map(|c| c.expect("valid chunk"))
        .filter(|c| !c.is_card_text())
        .map(|c| c.raw.to_vec())
        .collect()
}

fn card_png(texts: &[(&str, &str)]) -> Vec<u8> {
    let encoded: Vec<(String, String)> = texts
        .iter()
        .map(|(k, v)| (k.to_string(), BASE64.encode(v)))
        .collect();
    let refs: Vec<(&str, &[u8])> = encoded
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    png::with_texts(&picture(), &refs).expect("card png")
}

#[test]
fn png_with_both_chunks_round_trips_and_keeps_the_image_bytes() {
    let file = card_png(&[("chara", V2_FULL), ("ccv3", V3_FULL)]);
    let card = cards::parse(&file).expect("parse");
    assert_eq!((card.format, card.spec), (CardFormat::Png, CardSpec::V3));
    assert_eq!(
        card.data["nickname"], "Sera",
        "ccv3 is preferred over chara"
    );
    assert_eq!(card.assets.len(), 1);
    assert_eq!(card.assets[0].name, AVATAR);
    assert_eq!(
        card.assets[0].bytes,
        picture(),
        "the avatar is the image minus the card"
    );

    let (c, assets) = companion_of(&card);
    let exported = cards::export_png(&c, &assets).expect("export");
    assert_eq!(
        non_card_chunks(&exported),
        non_card_chunks(&file),
        "every non-card chunk (IHDR, IDAT, tEXt Comment, IEND) byte for byte"
    );
    let texts = png::card_texts(&exported).expect("texts");
    let keywords: Vec<&str> = texts.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keywords,
        vec!["chara", "ccv3"],
        "both chunks, like SillyTavern"
    );
    let chara: Value =
        serde_json::from_slice(&BASE64.decode(texts[0].1).expect("base64")).expect("json");
    assert_eq!(chara["spec"], "chara_card_v2");
    assert_eq!(chara["spec_version"], "2.0");
    assert_eq!(chara["data"]["name"], "Seraphine");

    let again = cards::parse(&exported).expect("reimport");
    assert_eq!(again.data, card.data);
    assert_eq!(again.assets, card.assets);
}

#[test]
fn a_companion_without_a_picture_exports_on_a_placeholder() {
    let card = cards::parse(V1.as_bytes()).expect("v1");
    let (c, assets) = companion_of(&card);
    assert!(assets.is_empty());
    let bytes = cards::export_png(&c, &assets).expect("export");
    let decoder = ::png::Decoder::new(Cursor::new(&bytes));
    let info = decoder.read_info().expect("a real PNG");
    assert_eq!((info.info().width, info.info().height), (400, 600));
    let again = cards::parse(&bytes).expect("reimport");
    assert_eq!(again.name(), "Old Tom");
}

fn charx_file() -> Vec<u8> {
    let mut card = value(V3_FULL);
    card["data"]["assets"] = json!([
        {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"},
        {"type": "other", "uri": "embeded://assets/other/other/notes.txt", "name": "notes", "ext": "txt"},
        {"type": "background", "uri": "ccdefault:", "name": "main", "ext": "png"}
    ]);
    let json = serde_json::to_vec(&card).expect("json");
    charx::write(
        &json,
        &[
            ("assets/icon/images/main.png", &picture()),
            ("assets/other/other/notes.txt", b"Seraphine's notes"),
            ("x_meta/app.json", b"{\"app\":\"data\"}"),
        ],
    )
    .expect("charx")
}

#[test]
fn charx_with_assets_round_trips() {
    let file = charx_file();
    let card = cards::parse(&file).expect("parse");
    assert_eq!((card.format, card.spec), (CardFormat::Charx, CardSpec::V3));
    assert!(card.warnings.is_empty(), "{:?}", card.warnings);
    let names: Vec<&str> = card.assets.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "assets/icon/images/main.png",
            "assets/other/other/notes.txt",
            "x_meta/app.json"
        ]
    );
    assert_eq!(card.assets[0].media_type, "image/png");

    let (c, assets) = companion_of(&card);
    let exported = cards::export_charx(&c, &assets).expect("export");
    let again = cards::parse(&exported).expect("reimport");
    assert_eq!(again.data, card.data);
    assert_eq!(again.assets, card.assets);

    // The card's icon becomes the PNG export's image.
    let as_png = cards::export_png(&c, &assets).expect("png");
    assert_eq!(non_card_chunks(&as_png), non_card_chunks(&picture()));
}

#[test]
fn a_png_card_exports_to_charx_with_its_picture_as_the_main_icon() {
    let card = cards::parse(&card_png(&[("chara", V2_FULL)])).expect("v2 png");
    assert_eq!(card.spec, CardSpec::V2);
    let (c, assets) = companion_of(&card);
    let exported = cards::export_charx(&c, &assets).expect("charx");
    let contents = charx::read(&exported).expect("read");
    assert_eq!(contents.files.len(), 1);
    assert_eq!(contents.files[0].0, "assets/icon/images/main.png");
    assert_eq!(contents.files[0].1, picture());
    let json: Value = serde_json::from_slice(&contents.card_json).expect("card.json");
    assert_eq!(
        json["data"]["assets"],
        json!([{"type": "icon", "uri": "embeded://assets/icon/images/main.png",
                "name": "main", "ext": "png"}])
    );
}

#[test]
fn v1_cards_import() {
    let card = cards::parse(V1.as_bytes()).expect("v1");
    assert_eq!(card.spec, CardSpec::V1);
    let (c, _) = companion_of(&card);
    assert_eq!(
        (c.name.as_str(), c.description.as_str(), c.greeting.as_str()),
        ("Old Tom", "{{char}} is a retired sailor.", "Ahoy, <USER>.")
    );
    assert_eq!(card.data["scenario"], "A harbour tavern.");
    assert_eq!(
        card.data[TOP_LEVEL_KEY],
        json!({"chat": "Old Tom - 2023-5-1", "avatar": "none"})
    );
    let exported: Value =
        serde_json::from_slice(&cards::export_json(&c).expect("export")).expect("json");
    assert_eq!(exported["spec"], "chara_card_v3");
    assert_eq!(exported["data"]["mes_example"], value(V1)["mes_example"]);
    assert_eq!(exported["chat"], "Old Tom - 2023-5-1");
    // V1 inside a PNG's chara chunk works too.
    let from_png = cards::parse(&card_png(&[("chara", V1)])).expect("v1 png");
    assert_eq!(from_png.spec, CardSpec::V1);
}

fn assert_error(bytes: &[u8], check: fn(&CardError) -> bool, what: &str) {
    match cards::parse(bytes) {
        Ok(card) => panic!("{what}: parsed as {}", card.name()),
        Err(e) => {
            assert!(check(&e), "{what}: unexpected error {e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn malformed_files_are_clear_errors() {
    assert_error(
        &png::with_texts(&picture(), &[("chara", b"%%% not base64 %%%")]).expect("png"),
        |e| matches!(e, CardError::Base64(_)),
        "bad base64",
    );
    assert_error(
        &card_png(&[("ccv3", "{\"spec\": \"chara_card_v3\", \"data\": ")]),
        |e| matches!(e, CardError::Json(_)),
        "bad JSON in a PNG",
    );
    assert_error(
        b"{\"spec\": \"chara_card_v2\", \"data\": {\"name\": \"x\"",
        |e| matches!(e, CardError::Json(_)),
        "bad JSON",
    );
    assert_error(
        br#"{"spec": "chara_card_v9", "data": {"name": "x"}}"#,
        |e| matches!(e, CardError::UnsupportedSpec(s) if s == "chara_card_v9"),
        "wrong spec",
    );
    let good = card_png(&[("ccv3", V3_FULL)]);
    for cut in [good.len() - 1, good.len() / 2, 20, 9] {
        assert_error(
            &good[..cut],
            |e| matches!(e, CardError::Png(_)),
            "truncated PNG",
        );
    }
    // A chunk declaring 2 GiB right after IHDR: refused without allocating it.
    let mut huge = good[..33].to_vec();
    huge.extend_from_slice(&0x7fff_ffff_u32.to_be_bytes());
    huge.extend_from_slice(b"tEXt");
    huge.extend_from_slice(b"chara\0");
    assert_error(
        &huge,
        |e| matches!(e, CardError::Png(m) if m.contains("declares")),
        "huge chunk",
    );
    let mut bad_crc = good.clone();
    let last_text_crc = bad_crc.len() - 12 - 1;
    bad_crc[last_text_crc] ^= 0x55;
    assert_error(
        &bad_crc,
        |e| matches!(e, CardError::Png(m) if m.contains("CRC")),
        "CRC mismatch",
    );
    assert_error(
        &vec![b'{'; MAX_CARD_BYTES + 1],
        |e| matches!(e, CardError::TooLarge(_)),
        "over the size limit",
    );
    assert_error(
        &png::with_texts(&picture(), &[]).expect("png"),
        |e| matches!(e, CardError::NotACard(_)),
        "a PNG without a card",
    );
}

/// A zip written entry by entry, names unchecked (to build hostile archives).
fn raw_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(*name, options).expect("start");
        zip.write_all(bytes).expect("write");
    }
    zip.finish().expect("finish").into_inner()
}

#[test]
fn hostile_charx_archives_are_clear_errors() {
    let card = V3_FULL.as_bytes();
    assert_error(
        &raw_zip(&[("card.json", card), ("../../etc/cron.d/evil", b"x")]),
        |e| matches!(e, CardError::UnsafePath(_)),
        "path traversal",
    );
    assert_error(
        &raw_zip(&[("card.json", card), ("/abs/path.png", b"x")]),
        |e| matches!(e, CardError::UnsafePath(_)),
        "absolute path",
    );
    let zeros = vec![0u8; 8 << 20];
    assert_error(
        &raw_zip(&[("card.json", card), ("assets/bomb.bin", &zeros)]),
        |e| matches!(e, CardError::TooLarge(m) if m.contains("zip bomb")),
        "zip bomb",
    );
    // Many moderately compressible entries: the total is bounded too.
    let noise: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let names: Vec<String> = (0..13).map(|i| format!("assets/n{i}.bin")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("card.json", card)];
    entries.extend(names.iter().map(|n| (n.as_str(), noise.as_slice())));
    assert_error(
        &raw_zip(&entries),
        |e| matches!(e, CardError::TooLarge(m) if m.contains("uncompressed")),
        "total size",
    );
    assert_error(
        &raw_zip(&[("readme.txt", b"hi")]),
        |e| matches!(e, CardError::NotACard(_)),
        "no card.json",
    );
    assert_error(
        b"PK\x03\x04 definitely not a zip",
        |e| matches!(e, CardError::Charx(_)),
        "broken zip",
    );
}

// ---- with a store and the conversation engine ----

#[test]
fn importing_stores_the_companion_and_assets_and_refuses_a_taken_name() {
    let store = MemoryStore::new();
    let clock = SteppingClock::new(1_000, 1);
    let file = charx_file();
    let (c, summary) = cards::import(&store, &clock, &file, None).expect("import");
    assert_eq!(summary.lorebook_entries, 5);
    assert_eq!(summary.assets, 3);
    assert_eq!(store.assets(c.id).expect("assets").len(), 3);
    let stored = store.companion(c.id).expect("stored");
    assert_eq!(stored.card, c.card);

    let err = cards::import(&store, &clock, &file, Some(" seraphine ")).expect_err("taken");
    assert!(
        matches!(&err, CardError::NameTaken(n) if n == "seraphine"),
        "{err}"
    );
    let (copy, _) = cards::import(&store, &clock, &file, Some("Sera II")).expect("renamed");
    assert_eq!(copy.name, "Sera II");
    assert_eq!(store.list_companions().expect("list").len(), 2);

    let exported = cards::export(&store, &copy, CardFormat::Charx).expect("export");
    let again = cards::parse(&exported).expect("reimport");
    assert_eq!(again.name(), "Sera II");
    assert_eq!(again.assets.len(), 3);
    // Export reflects edits of the companion's own fields.
    let mut edited = store.companion(copy.id).expect("companion");
    edited.personality = "fierce".into();
    edited.speaking_style = "terse".into();
    store.update_companion(&edited).expect("update");
    let json = cards::export(&store, &edited, CardFormat::Json).expect("json");
    let v: Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(v["data"]["personality"], "fierce");
    assert_eq!(v["data"]["extensions"]["nexus"]["speaking_style"], "terse");
    assert_eq!(
        v["data"]["extensions"]["other_app"]["voice"]["id"],
        "forest-1"
    );
}

fn card_companion(store: &MemoryStore, clock: &SteppingClock) -> Companion {
    let card = json!({
        "spec": "chara_card_v2", "spec_version": "2.0",
        "data": {
            "name": "Mira", "description": "{{char}} tends a garden.", "personality": "warm",
            "first_mes": "Welcome to my garden, {{user}}!",
            "scenario": "A walled garden in spring.",
            "system_prompt": "You are {{char}}. {{original}}",
            "post_history_instructions": "Reply in one or two sentences.",
            "character_book": {"entries": [
                {"keys": ["greenhouse"], "content": "The greenhouse holds rare orchids.",
                 "enabled": true, "insertion_order": 1, "extensions": {}},
                {"keys": ["secret"], "content": "SHOULD NEVER APPEAR", "enabled": false,
                 "insertion_order": 2, "extensions": {}}
            ]},
            "extensions": {}
        }
    });
    let bytes = serde_json::to_vec(&card).expect("json");
    cards::import(store, clock, &bytes, None).expect("import").0
}

#[test]
fn a_lorebook_entry_reaches_the_prompt_only_when_its_key_is_mentioned() {
    let store = MemoryStore::new();
    let clock = SteppingClock::new(1_000, 10);
    let mira = card_companion(&store, &clock);
    let engine = ConversationEngine::new(&store, &clock, ChatSettings::default());
    let conv = engine.start_conversation(&mira).expect("conversation");
    assert_eq!(
        store.messages(conv.id, None).expect("greeting")[0].text,
        "Welcome to my garden, User!"
    );
    let mut llm = FakeLlm::new(&["Hello!", "It is lovely.", "Anything else?"]);
    let mut say = |text: &str| {
        engine
            .reply(&mut llm, conv.id, text, None, &mut |_| Flow::Continue)
            .expect("reply");
    };
    say("Hi Mira, what a nice day.");
    say("Can I see the Greenhouse? And the secret?");
    say("Let us talk about the weather.");
    let requests = llm.recorded();
    let system_of = |i: usize| requests[i].messages[0].content.clone();

    assert!(!system_of(0).contains("orchids"), "{}", system_of(0));
    assert!(system_of(1).contains("The greenhouse holds rare orchids."));
    assert!(requests.iter().all(|r| {
        r.messages
            .iter()
            .all(|m| !m.content.contains("SHOULD NEVER APPEAR"))
    }));
    // Scan depth 2: the user's new message and the previous reply; the mention has scrolled
    // out by the third exchange.
    assert!(!system_of(2).contains("orchids"), "{}", system_of(2));

    for r in &requests {
        let system = &r.messages[0].content;
        assert!(system.contains("You are Mira. You are Mira, the user's companion."));
        assert!(system.contains("Scenario: A walled garden in spring."));
        let n = r.messages.len();
        assert_eq!(r.messages[n - 2].role, "system");
        assert_eq!(r.messages[n - 2].content, "Reply in one or two sentences.");
        assert_eq!(r.messages[n - 1].role, "user");
    }
}

#[test]
fn card_prompts_stay_within_the_budget() {
    let store = MemoryStore::new();
    let clock = SteppingClock::new(1_000, 10);
    let mira = card_companion(&store, &clock);
    let settings = ChatSettings {
        max_reply_tokens: 100,
        ..Default::default()
    };
    let engine = ConversationEngine::new(&store, &clock, settings);
    let conv = engine.start_conversation(&mira).expect("conversation");
    let mut llm = FakeLlm::new(&[]);
    llm.context = 400;
    for i in 0..60 {
        engine
            .reply(
                &mut llm,
                conv.id,
                &format!("message {i} about the greenhouse and more"),
                None,
                &mut |_| Flow::Continue,
            )
            .expect("reply");
    }
    let last = llm.recorded().pop().expect("recorded");
    // FakeLlm counts words + 1 per text; the template adds 5 per message.
    let tokens: usize = last
        .messages
        .iter()
        .map(|m| m.content.split_whitespace().count() + 1 + 5)
        .sum();
    assert!(
        tokens <= 300,
        "prompt of {tokens} tokens exceeds the budget"
    );
    assert!(last.messages[0].content.contains("orchids"));
    assert!(last.messages.len() > 6, "recent turns still fit");
}

#[test]
fn companions_without_a_card_export_and_come_back_with_their_speaking_style() {
    let c = Companion {
        id: CompanionId::new(),
        name: "Nova".into(),
        description: "A friendly companion.".into(),
        personality: "curious".into(),
        speaking_style: "short sentences".into(),
        greeting: "Hi!".into(),
        card: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    };
    for format in CardFormat::ALL {
        let bytes = match format {
            CardFormat::Json => cards::export_json(&c),
            CardFormat::Png => cards::export_png(&c, &[]),
            CardFormat::Charx => cards::export_charx(&c, &[]),
        }
        .expect("export");
        let card = cards::parse(&bytes).expect("reimport");
        let back = card.to_companion(None, Timestamp(0));
        assert_eq!(
            (
                back.name,
                back.description,
                back.personality,
                back.speaking_style,
                back.greeting
            ),
            (
                c.name.clone(),
                c.description.clone(),
                c.personality.clone(),
                c.speaking_style.clone(),
                c.greeting.clone()
            ),
            "{format}"
        );
    }
}
