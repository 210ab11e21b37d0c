//! Concurrent edits on simulated devices merge without losing either side.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nexus_store::EmotionSource;
use nexus_store::Store;
use nexus_sync::relay::Relay;
use nexus_sync::{DocName, SyncClient};

/// Device A with Mira (a memory, a conversation), device B joined and synced.
fn two_devices() -> (
    Relay,
    Vec<Device>,
    nexus_common::CompanionId,
    nexus_common::ConversationId,
) {
    let mut relay = Relay::new();
    let a = Device::first(&mut relay);
    let mira = companion(&a.store, "Mira", 1_000);
    add_memory(&a.store, mira.id, "The user has a cat.", 1_100);
    let conv = conversation(&a.store, mira.id, 1_200);
    append(&a.store, conv.id, "hello", 1_300);
    a.store.set_setting("theme", "dark").unwrap();
    let b = Device::join(&a.code());
    let mut devices = vec![a, b];
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(devices[1].store.list_companions().unwrap().len(), 1);
    assert_eq!(devices[1].store.messages(conv.id, None).unwrap().len(), 1);
    (relay, devices, mira.id, conv.id)
}

#[test]
fn a_joined_device_receives_everything() {
    let (_relay, devices, mira, _) = two_devices();
    let b = &devices[1].store;
    assert_eq!(b.companion(mira).unwrap().name, "Mira");
    assert_eq!(b.list_memories(mira, true).unwrap().len(), 1);
    assert_eq!(b.setting("theme").unwrap().as_deref(), Some("dark"));
}

#[test]
fn both_add_memories_offline_and_both_survive() {
    let (mut relay, mut devices, mira, _) = two_devices();
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    add_memory(&devices[0].store, mira, "The user likes tea.", 2_000);
    add_memory(&devices[1].store, mira, "The user plays chess.", 2_001);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    let texts: Vec<String> = devices[0]
        .store
        .list_memories(mira, true)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        [
            "The user has a cat.",
            "The user likes tea.",
            "The user plays chess."
        ]
    );
}

#[test]
fn both_add_journal_entries_offline_and_both_survive() {
    let (mut relay, mut devices, _, _) = two_devices();
    // Before going offline: an entry that reaches the other device in the normal way.
    let shared = journal_entry(EmotionSource::Text, 1_500, -0.25);
    add_journal(&devices[0].store, std::slice::from_ref(&shared));
    settle(&mut devices, &mut relay);
    assert_eq!(journal(&devices[1].store), vec![shared.clone()]);
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    // A: a text reading and its fused state; B (a watch): heart-rate readings, one at the same
    // time as A's reading.
    let text = journal_entry(EmotionSource::Text, 2_000, 0.5);
    let mut fused = journal_entry(EmotionSource::Fused, 2_000, 0.4);
    fused.details = serde_json::json!({"contributions": [{"source": "text", "weight": 1.0}]});
    add_journal(&devices[0].store, &[text.clone(), fused.clone()]);
    let mut heart = journal_entry(EmotionSource::Heart, 2_000, 0.0);
    heart.labels.clear();
    heart.conversation_id = None;
    heart.message_id = None;
    let mut later = heart.clone();
    later.id = nexus_common::JournalId::new();
    later.at = nexus_common::Timestamp(2_300_000);
    add_journal(&devices[1].store, &[heart.clone(), later.clone()]);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in &devices {
        let mut got = journal(&d.store);
        got.sort_by_key(|e| (e.at, e.id));
        let mut want = vec![
            shared.clone(),
            text.clone(),
            fused.clone(),
            heart.clone(),
            later.clone(),
        ];
        want.sort_by_key(|e| (e.at, e.id));
        assert_eq!(got, want, "every entry, every field, on every device");
    }
    // Nothing left to capture: the stores and the journal document agree.
    for d in devices.iter_mut() {
        assert_eq!(d.client.sync_local(&d.store).unwrap(), 0);
        assert_eq!(d.client.status().journal_readings, 5);
    }
    // A restarted device that joins later gets the whole journal.
    let c = Device::join(&devices[0].code());
    devices.push(c);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(journal(&devices[2].store).len(), 5);
}

#[test]
fn a_malformed_journal_reading_is_skipped_and_the_others_arrive() {
    use nexus_sync::doc::{Field, Writer};
    let (mut relay, mut devices, _, _) = two_devices();
    let good = journal_entry(EmotionSource::Face, 5_000, 0.25);
    add_journal(&devices[0].store, std::slice::from_ref(&good));
    let a = &mut devices[0];
    a.client.sync_local(&a.store).unwrap();
    // Another writer (a future version, another library) puts a reading the store refuses.
    let doc = a
        .client
        .export_document(&DocName::Journal)
        .expect("journal document");
    let mut am = automerge::AutoCommit::load(&doc).unwrap();
    let before = am.get_heads();
    let bad: nexus_sync::doc::Record = [
        ("at".to_owned(), Field::Int(6_000)),
        ("source".to_owned(), Field::Str("text".into())),
        ("valence".to_owned(), Field::F64(7.0)),
    ]
    .into_iter()
    .collect();
    Writer::new(&mut am)
        .put_entity(
            "readings",
            &nexus_common::JournalId::new().to_string(),
            &bad,
        )
        .unwrap();
    am.commit();
    let mut bytes = Vec::new();
    for c in am.get_changes(&before) {
        bytes.extend_from_slice(c.raw_bytes());
    }
    a.client
        .import_document(&a.store, &DocName::Journal, &bytes)
        .unwrap();
    settle(&mut devices, &mut relay);
    assert_eq!(journal(&devices[1].store), vec![good.clone()]);
    assert_eq!(journal(&devices[0].store), vec![good]);
}

#[test]
fn a_persona_edit_and_a_memory_deletion_both_survive() {
    let (mut relay, mut devices, mira, _) = two_devices();
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    set_trust(&devices[0].store, mira, 0.9, 3_000);
    let cat = devices[1].store.list_memories(mira, true).unwrap()[0].id;
    assert_eq!(devices[1].store.delete_memories(&[cat]).unwrap(), 1);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in &devices {
        assert!(d.store.list_memories(mira, true).unwrap().is_empty());
        let persona = d.store.persona_state(mira).unwrap().expect("persona");
        assert!((persona.trust - 0.9).abs() < 1e-6);
        assert_eq!(d.store.persona_history(mira, None).unwrap().len(), 1);
    }
}

#[test]
fn both_append_to_the_same_conversation() {
    let (mut relay, mut devices, _, conv) = two_devices();
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    append(&devices[0].store, conv, "a1", 2_000);
    append(&devices[1].store, conv, "b1", 2_500);
    append(&devices[0].store, conv, "a2", 3_000);
    append(&devices[1].store, conv, "b2", 3_500);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in &devices {
        let texts: Vec<String> = d
            .store
            .messages(conv, None)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["hello", "a1", "b1", "a2", "b2"]);
    }
}

#[test]
fn three_devices_converge_after_concurrent_offline_edits() {
    let (mut relay, mut devices, mira, conv) = two_devices();
    let c = Device::join(&devices[0].code());
    devices.push(c);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    add_memory(&devices[0].store, mira, "A: likes tea.", 5_000);
    set_trust(&devices[1].store, mira, 0.7, 5_001);
    append(&devices[2].store, conv, "from C", 5_002);
    devices[2].store.set_setting("voice", "soft").unwrap();
    devices[1].store.delete_setting("theme").unwrap();
    let nova = companion(&devices[2].store, "Nova", 5_003);
    let nova_conv = conversation(&devices[2].store, nova.id, 5_004);
    append(&devices[2].store, nova_conv.id, "hi Nova", 5_005);
    // Each syncs alone, in turns, then all settle.
    devices[1].pump(&mut relay);
    devices[0].pump(&mut relay);
    devices[2].pump(&mut relay);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    let a = &devices[0].store;
    assert_eq!(a.list_companions().unwrap().len(), 2);
    assert_eq!(a.messages(nova_conv.id, None).unwrap().len(), 1);
    assert_eq!(a.setting("theme").unwrap(), None);
    assert_eq!(a.setting("voice").unwrap().as_deref(), Some("soft"));
}

#[test]
fn offline_edits_queue_across_restarts_and_sync_later() {
    let (mut relay, mut devices, mira, _) = two_devices();
    devices[0].go_offline(&mut relay);
    add_memory(&devices[0].store, mira, "Written offline.", 6_000);
    // Captured and queued while offline, then the app restarts before it ever connects.
    let a = &mut devices[0];
    a.client.sync_local(&a.store).unwrap();
    assert!(devices[0].client.pending() > 0);
    devices[0].restart(&mut relay);
    assert!(
        devices[0].client.pending() > 0,
        "the queue survives a restart"
    );
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(devices[1].store.list_memories(mira, true).unwrap().len(), 2);
}

#[test]
fn deleting_a_companion_or_conversation_propagates() {
    let (mut relay, mut devices, mira, conv) = two_devices();
    devices[1].store.delete_conversation(conv).unwrap();
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert!(devices[0].store.conversation(conv).is_err());
    devices[0].store.delete_companion(mira).unwrap();
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert!(devices[1].store.list_companions().unwrap().is_empty());
}

#[test]
fn the_same_name_created_on_two_devices_is_resolved_the_same_way() {
    let (mut relay, mut devices, _, _) = two_devices();
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    companion(&devices[0].store, "Nova", 7_000);
    companion(&devices[1].store, "Nova", 7_001);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    let names: Vec<String> = devices[0]
        .store
        .list_companions()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"Nova".to_owned()), "{names:?}");
}

#[test]
fn device_local_settings_stay_on_the_device() {
    let (mut relay, mut devices, _, _) = two_devices();
    devices[0]
        .store
        .set_setting("device.window", "big")
        .unwrap();
    devices[0].store.set_setting("shared", "yes").unwrap();
    settle(&mut devices, &mut relay);
    assert_eq!(devices[1].store.setting("device.window").unwrap(), None);
    assert_eq!(
        devices[1].store.setting("shared").unwrap().as_deref(),
        Some("yes")
    );
}

#[test]
fn snapshots_compact_the_log_and_new_devices_start_from_them() {
    let mut relay = Relay::new();
    let mut a = Device::first(&mut relay);
    a.client.set_snapshot_every(5);
    let mira = companion(&a.store, "Mira", 1_000);
    let conv = conversation(&a.store, mira.id, 1_000);
    for i in 0..30 {
        append(&a.store, conv.id, &format!("message {i}"), 2_000 + i);
        a.pump(&mut relay);
    }
    let doc = a
        .client
        .keys()
        .doc_id(&DocName::Conversation(conv.id).to_string());
    let entries = relay.entries(a.client.keys().space(), &doc);
    assert!(entries.len() < 10, "compacted to {} entries", entries.len());
    assert!(entries.iter().any(|e| e.covers.is_some()));
    let b = Device::join(&a.code());
    let mut devices = vec![a, b];
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(devices[1].store.messages(conv.id, None).unwrap().len(), 30);
}

#[test]
fn a_device_with_a_wrong_secret_reads_nothing() {
    let (mut relay, devices, _, _) = two_devices();
    let mut code = devices[0].client.pairing_code().unwrap();
    code.secret = nexus_sync::SpaceSecret::from_bytes([9; 32]);
    let mut intruder = Device::join(&code.to_text());
    intruder.pump(&mut relay);
    assert!(intruder.store.list_companions().unwrap().is_empty());
    let status = intruder.client.status();
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .unwrap_or_default()
            .contains("Unauthorized"),
        "the wrong token is refused"
    );
}

#[test]
fn entries_under_a_wrong_key_are_rejected_and_reported() {
    // The server relays a blob sealed with another key (a malicious or confused server).
    let (mut relay, mut devices, _, _) = two_devices();
    let mut keys = devices[0].client.keys().clone();
    keys = nexus_sync::SpaceKeys::derive(
        keys.space(),
        &nexus_sync::SpaceSecret::from_bytes([3; 32]),
        0,
    );
    let doc = devices[0].client.keys().doc_id("settings");
    let blob = keys
        .seal(&doc, nexus_sync_protocol::BlobKind::Change, b"junk")
        .unwrap();
    let b = &mut devices[1];
    b.client
        .handle(
            &b.store,
            nexus_sync_protocol::ServerMessage::Entries {
                doc,
                entries: vec![nexus_sync_protocol::Entry {
                    seq: 999,
                    kind: nexus_sync_protocol::BlobKind::Change,
                    covers: None,
                    blob,
                }],
            },
        )
        .unwrap();
    let errors = b.client.take_errors();
    assert!(errors.iter().any(|e| e.contains("rejected")), "{errors:?}");
    let _ = &mut relay;
}

#[test]
fn disabling_and_reopening() {
    let (_relay, devices, _, _) = two_devices();
    let store = &devices[1].store;
    assert!(SyncClient::open(store).unwrap().is_some());
    SyncClient::disable(store).unwrap();
    assert!(SyncClient::open(store).unwrap().is_none());
    assert_eq!(store.list_companions().unwrap().len(), 1, "the data stays");
}
