//! Forgetting under sync: a forgotten memory, conversation or companion leaves no trace in any
//! device's documents or on the relay, through new document generations, also with devices
//! that were offline (and kept editing), concurrent forgetting on two devices, and restarts
//! at every step.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nexus_common::CompanionId;
use nexus_store::Store;
use nexus_sync::relay::Relay;
use nexus_sync::{DocName, SyncClient};

/// A word that appears only in what gets forgotten.
const SECRET: &str = "Zanzibarite";

/// A and B with Mira, a memory holding [`SECRET`] and an ordinary one, synced.
fn synced_pair() -> (Relay, Vec<Device>, CompanionId, nexus_store::MemoryItem) {
    let mut relay = Relay::new();
    let a = Device::first(&mut relay);
    let mira = companion(&a.store, "Mira", 1_000);
    let secret = add_memory(
        &a.store,
        mira.id,
        &format!("The user's {SECRET} plan."),
        1_100,
    );
    add_memory(&a.store, mira.id, "The user has a cat.", 1_200);
    let conv = conversation(&a.store, mira.id, 1_300);
    append(&a.store, conv.id, "hello", 1_400);
    let b = Device::join(&a.code());
    let mut devices = vec![a, b];
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in &devices {
        assert!(
            !device_docs_holding(&d.store, SECRET).is_empty(),
            "before: the secret is in the documents"
        );
    }
    assert!(
        !relay_docs_holding(&relay, devices[0].client.keys(), SECRET).is_empty(),
        "before: the secret is on the relay"
    );
    (relay, devices, mira.id, secret)
}

/// Nothing anywhere holds `word`: no store, no document kept on a device (history included),
/// nothing on the relay (decrypted).
#[track_caller]
fn gone_everywhere(relay: &Relay, devices: &[Device], word: &str) {
    for (i, d) in devices.iter().enumerate() {
        assert!(!dump(&d.store).contains(word), "device {i}'s store");
        let held = device_docs_holding(&d.store, word);
        assert!(held.is_empty(), "device {i} keeps {held:?}");
    }
    let held = relay_docs_holding(relay, devices[0].client.keys(), word);
    assert!(held.is_empty(), "the relay keeps {held:?}");
}

fn memory_texts(store: &dyn Store, c: CompanionId) -> Vec<String> {
    let mut t: Vec<String> = store
        .list_memories(c, true)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    t.sort();
    t
}

#[test]
fn a_forgotten_memory_leaves_no_trace_on_any_device_or_the_relay() {
    let (mut relay, mut devices, mira, secret) = synced_pair();
    let docs_before = relay.docs(devices[0].client.keys().space());
    let old_id = devices[0]
        .client
        .keys()
        .doc_id(&DocName::Companion(mira).to_string());
    assert!(docs_before.contains(&old_id));

    devices[0].store.delete_memories(&[secret.id]).unwrap();
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(
        memory_texts(&devices[1].store, mira),
        vec!["The user has a cat."]
    );
    gone_everywhere(&relay, &devices, SECRET);
    // The companion's first generation is gone from the relay; a new one replaced it.
    let docs_after = relay.docs(devices[0].client.keys().space());
    assert!(!docs_after.contains(&old_id));
    assert_eq!(docs_after.len(), docs_before.len());
    for d in &devices {
        assert_eq!(d.store.sync_keys("doc/").unwrap().len(), docs_after.len());
        assert_eq!(d.client.pending(), 0);
    }
    // The old generation cannot come back: a push to it is refused.
    let mut again = SyncClient::open(&devices[1].store).unwrap().unwrap();
    // settings, journal, space, companion, conversation
    assert_eq!(again.status().documents, 5);
    // Later edits flow through the new generation.
    add_memory(&devices[1].store, mira, "The user likes rain.", 3_000);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(memory_texts(&devices[0].store, mira).len(), 2);
    again.disconnected();
}

#[test]
fn an_offline_device_keeps_its_own_edits_and_loses_the_forgotten_memory() {
    let (mut relay, mut devices, mira, secret) = synced_pair();
    let conv = devices[0].store.list_conversations(mira).unwrap()[0].id;
    devices[1].go_offline(&mut relay);
    // B, offline: a memory of its own, a message, a persona change, and an edit of the very
    // memory A is about to forget; all captured into its (soon old) documents.
    add_memory(&devices[1].store, mira, "B: the user plays chess.", 2_000);
    append(&devices[1].store, conv, "written offline on B", 2_010);
    set_trust(&devices[1].store, mira, 0.7, 2_020);
    let mut pinned = secret.clone();
    pinned.pinned = true;
    pinned.updated_at = nexus_common::Timestamp(2_030);
    devices[1].store.update_memory(&pinned).unwrap();
    let b = &mut devices[1];
    b.client.sync_local(&b.store).unwrap();
    b.client.save(&b.store).unwrap();
    assert!(b.client.pending() > 0);

    // A forgets the memory and syncs: the new generation is up, the old one deleted.
    devices[0].store.delete_memories(&[secret.id]).unwrap();
    devices[0].pump(&mut relay);
    assert_eq!(devices[0].client.pending(), 0);
    assert!(relay_docs_holding(&relay, devices[0].client.keys(), SECRET).is_empty());

    // B comes back (after a restart, for good measure).
    devices[1].restart(&mut relay);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in &devices {
        assert_eq!(
            memory_texts(&d.store, mira),
            vec!["B: the user plays chess.", "The user has a cat."]
        );
        assert_eq!(d.store.messages(conv, None).unwrap().len(), 2);
        assert_eq!(d.store.persona_state(mira).unwrap().unwrap().trust, 0.7);
    }
    gone_everywhere(&relay, &devices, SECRET);
}

#[test]
fn forgetting_on_two_devices_at_once_converges_and_forgets_both() {
    let (mut relay, mut devices, mira, secret) = synced_pair();
    let other = add_memory(&devices[0].store, mira, "The user's Quixotry hobby.", 1_500);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    // Each forgets a different memory, offline: two generations 1 of one document.
    devices[0].store.delete_memories(&[secret.id]).unwrap();
    devices[1].store.delete_memories(&[other.id]).unwrap();
    add_memory(&devices[1].store, mira, "B: new while offline.", 2_000);
    for d in devices.iter_mut() {
        d.client.sync_local(&d.store).unwrap();
        d.client.save(&d.store).unwrap();
    }
    settle(&mut devices, &mut relay);
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(
        memory_texts(&devices[0].store, mira),
        vec!["B: new while offline.", "The user has a cat."]
    );
    gone_everywhere(&relay, &devices, SECRET);
    gone_everywhere(&relay, &devices, "Quixotry");
    // One generation of the companion is left, the same on both devices and the relay.
    let space = devices[0].client.keys().space().clone();
    assert_eq!(
        relay.docs(&space).len(),
        5,
        "settings, journal, space, companion, conversation"
    );
    for d in &devices {
        assert_eq!(device_doc_count(&d.store), 5);
        assert_eq!(d.client.pending(), 0);
    }
}

#[test]
fn a_device_offline_through_two_generations_catches_up() {
    let mut relay = Relay::new();
    let a = Device::first(&mut relay);
    let mira = companion(&a.store, "Mira", 1_000);
    let one = add_memory(&a.store, mira.id, "First Zanzibarite.", 1_100);
    let two = add_memory(&a.store, mira.id, "Second Quixotry.", 1_200);
    let b = Device::join(&a.code());
    let c = Device::join(&a.code());
    let mut devices = vec![a, b, c];
    settle(&mut devices, &mut relay);
    devices[2].go_offline(&mut relay);
    add_memory(&devices[2].store, mira.id, "C: offline thought.", 1_300);

    devices[0].store.delete_memories(&[one.id]).unwrap();
    settle(&mut devices[..2], &mut relay);
    devices[1].store.delete_memories(&[two.id]).unwrap();
    settle(&mut devices[..2], &mut relay);
    assert_converged(&devices[..2]);

    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(
        memory_texts(&devices[2].store, mira.id),
        vec!["C: offline thought."]
    );
    gone_everywhere(&relay, &devices, "Zanzibarite");
    gone_everywhere(&relay, &devices, "Quixotry");
}

/// Where the exchange of a forgetting device breaks off.
#[derive(Debug, Clone, Copy)]
enum Break {
    /// The app stops after capturing, before saving.
    BeforeSave,
    /// The new generation's upload is lost.
    Upload,
    /// The upload arrives, its acknowledgement is lost.
    UploadAck,
    /// The deletion of the old generation is lost.
    Delete,
    /// The deletion arrives, its answer is lost.
    DeleteAck,
}

#[test]
fn restarts_and_lost_messages_at_every_step_still_end_with_the_old_generation_deleted() {
    use nexus_sync_protocol::{ClientMessage, ServerMessage};
    for step in [
        Break::BeforeSave,
        Break::Upload,
        Break::UploadAck,
        Break::Delete,
        Break::DeleteAck,
    ] {
        let (mut relay, mut devices, mira, secret) = synced_pair();
        let old_id = devices[0]
            .client
            .keys()
            .doc_id(&DocName::Companion(mira).to_string());
        let a = &mut devices[0];
        a.go_offline(&mut relay);
        a.store.delete_memories(&[secret.id]).unwrap();
        a.client.sync_local(&a.store).unwrap();
        if !matches!(step, Break::BeforeSave) {
            a.client.save(&a.store).unwrap();
            let conn = relay.connect();
            a.client.connected();
            // Hello, then the welcome: the upload goes out (and nothing after it yet).
            for m in a.client.outgoing() {
                relay.handle(conn, m);
            }
            for m in relay.take(conn) {
                a.client.handle(&a.store, m).unwrap();
            }
            let out = a.client.outgoing();
            assert!(
                matches!(out.as_slice(), [ClientMessage::Snapshot { covers: 0, .. }]),
                "{step:?}: {out:?}"
            );
            if !matches!(step, Break::Upload) {
                for m in out {
                    relay.handle(conn, m);
                }
                let answers = relay.take(conn);
                assert!(matches!(answers.as_slice(), [ServerMessage::Ack { .. }]));
                if !matches!(step, Break::UploadAck) {
                    for m in answers {
                        a.client.handle(&a.store, m).unwrap();
                    }
                    let out = a.client.outgoing();
                    assert!(
                        matches!(out.as_slice(), [ClientMessage::Delete { doc, .. }] if *doc == old_id),
                        "{step:?}: the deletion follows the acknowledged upload: {out:?}"
                    );
                    if !matches!(step, Break::Delete) {
                        for m in out {
                            relay.handle(conn, m);
                        }
                        assert!(!relay.docs(a.client.keys().space()).contains(&old_id));
                    }
                }
            }
            relay.disconnect(conn);
            a.client.disconnected();
            a.client.save(&a.store).unwrap();
        }
        // The app starts again (the unsaved capture of `BeforeSave` is lost: the store still
        // lacks the memory, so the next capture forgets it again).
        a.client = SyncClient::open(&a.store).unwrap().unwrap();
        settle(&mut devices, &mut relay);
        assert_converged(&devices);
        assert_eq!(devices[0].client.pending(), 0, "{step:?}");
        assert_eq!(
            memory_texts(&devices[1].store, mira),
            vec!["The user has a cat."],
            "{step:?}"
        );
        gone_everywhere(&relay, &devices, SECRET);
        let space = devices[0].client.keys().space().clone();
        assert_eq!(relay.docs(&space).len(), 5, "{step:?}");
        assert!(!relay.docs(&space).contains(&old_id));
    }
}

#[test]
fn deleted_conversations_and_companions_leave_no_trace() {
    let (mut relay, mut devices, mira, _) = synced_pair();
    let conv = conversation(&devices[0].store, mira, 2_000);
    append(
        &devices[0].store,
        conv.id,
        "A Quokkaword confession.",
        2_100,
    );
    let nova = companion(&devices[1].store, "Nova", 2_200);
    add_memory(
        &devices[1].store,
        nova.id,
        "Nova knows the Yggdrasilite.",
        2_300,
    );
    let nova_conv = conversation(&devices[1].store, nova.id, 2_400);
    append(
        &devices[1].store,
        nova_conv.id,
        "Yggdrasilite again.",
        2_500,
    );
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(devices[0].store.list_companions().unwrap().len(), 2);

    devices[1].store.delete_conversation(conv.id).unwrap();
    devices[0].store.delete_companion(nova.id).unwrap();
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    assert_eq!(devices[1].store.list_companions().unwrap().len(), 1);
    assert!(devices[0].store.conversation(conv.id).is_err());
    gone_everywhere(&relay, &devices, "Quokkaword");
    gone_everywhere(&relay, &devices, "Yggdrasilite");
    gone_everywhere(&relay, &devices, "Nova");
}

#[test]
fn a_forgotten_memory_written_back_into_a_store_is_forgotten_again() {
    let (mut relay, mut devices, mira, secret) = synced_pair();
    devices[0].store.delete_memories(&[secret.id]).unwrap();
    settle(&mut devices, &mut relay);
    // Say an old archive brings it back on B: the tombstone wins.
    devices[1]
        .store
        .put_memories(std::slice::from_ref(&secret))
        .unwrap();
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    gone_everywhere(&relay, &devices, SECRET);
    assert_eq!(
        memory_texts(&devices[1].store, mira),
        vec!["The user has a cat."]
    );
}
