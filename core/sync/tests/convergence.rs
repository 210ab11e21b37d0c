//! Property tests: devices that edit concurrently while the network drops, duplicates and
//! reorders messages converge once delivery resumes, and what any of them forgot is gone from
//! every device's documents and from the relay.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nexus_common::{CompanionId, ConversationId, Timestamp};
use nexus_store::{MemoryItem, Store};
use nexus_sync::relay::Relay;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    AddMemory(usize),
    EditMemory(usize, usize),
    DeleteMemory(usize, usize),
    Supersede(usize, usize),
    Trust(usize, u8),
    Append(usize),
    Setting(usize, u8, u8),
    Describe(usize, u8),
    NewCompanion(usize),
    /// Sync device `.0` over a faulty network: drop / duplicate per-mille rates and shuffling.
    Sync(usize, u16, u16, bool, u64),
    Reconnect(usize),
    Restart(usize),
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    let d = 0..devices;
    prop_oneof![
        3 => d.clone().prop_map(Op::AddMemory),
        1 => (d.clone(), 0..8usize).prop_map(|(d, i)| Op::EditMemory(d, i)),
        1 => (d.clone(), 0..8usize).prop_map(|(d, i)| Op::DeleteMemory(d, i)),
        1 => (d.clone(), 0..8usize).prop_map(|(d, i)| Op::Supersede(d, i)),
        1 => (d.clone(), 0..=100u8).prop_map(|(d, t)| Op::Trust(d, t)),
        3 => d.clone().prop_map(Op::Append),
        1 => (d.clone(), 0..3u8, 0..3u8).prop_map(|(d, k, v)| Op::Setting(d, k, v)),
        1 => (d.clone(), 0..5u8).prop_map(|(d, n)| Op::Describe(d, n)),
        1 => d.clone().prop_map(Op::NewCompanion),
        4 => (d.clone(), 0..400u16, 0..300u16, any::<bool>(), any::<u64>())
            .prop_map(|(d, drop, dup, shuffle, seed)| Op::Sync(d, drop, dup, shuffle, seed)),
        1 => d.clone().prop_map(Op::Reconnect),
        1 => d.prop_map(Op::Restart),
    ]
}

/// A tiny deterministic generator for the network's decisions.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn current(store: &dyn Store, c: CompanionId) -> Vec<MemoryItem> {
    store.list_memories(c, false).unwrap()
}

fn run(devices_n: usize, ops: Vec<Op>, snapshot_every: u64, echo: bool) {
    let mut relay = Relay::new();
    relay.echo = echo;
    let mut first = Device::first(&mut relay);
    first.client.set_snapshot_every(snapshot_every);
    let mira = companion(&first.store, "Mira", 1_000);
    let conv: ConversationId = conversation(&first.store, mira.id, 1_000).id;
    let code = first.code();
    let mut devices = vec![first];
    for _ in 1..devices_n {
        let mut d = Device::join(&code);
        d.client.set_snapshot_every(snapshot_every);
        devices.push(d);
    }
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    // Texts of forgotten memories (with the older versions forgetting took along).
    let mut forgotten: Vec<String> = Vec::new();

    for (at, op) in (10_001_i64..).zip(ops) {
        match op {
            Op::AddMemory(d) => {
                add_memory(&devices[d].store, mira.id, &format!("fact {at}"), at);
            }
            Op::EditMemory(d, i) => {
                let s = &devices[d].store;
                let ms = current(s, mira.id);
                if let Some(m) = ms.get(i % ms.len().max(1)) {
                    let edited = MemoryItem {
                        text: format!("{} (edited {at})", m.text),
                        pinned: !m.pinned,
                        updated_at: Timestamp(at),
                        ..m.clone()
                    };
                    s.update_memory(&edited).unwrap();
                }
            }
            Op::DeleteMemory(d, i) => {
                let s = &devices[d].store;
                let ms = current(s, mira.id);
                if let Some(m) = ms.get(i % ms.len().max(1)) {
                    let all = |s: &dyn Store| s.list_memories(mira.id, true).unwrap();
                    let before = all(s);
                    s.delete_memories(&[m.id]).unwrap();
                    let after = all(s);
                    forgotten.extend(
                        before
                            .into_iter()
                            .filter(|m| !after.iter().any(|a| a.id == m.id))
                            .map(|m| m.text),
                    );
                }
            }
            Op::Supersede(d, i) => {
                let s = &devices[d].store;
                let ms = current(s, mira.id);
                if let Some(m) = ms.get(i % ms.len().max(1)) {
                    let new = memory(mira.id, &format!("new version {at}"), at);
                    s.supersede_memory(m.id, &new).unwrap();
                }
            }
            Op::Trust(d, t) => set_trust(&devices[d].store, mira.id, f32::from(t) / 100.0, at),
            Op::Append(d) => {
                append(
                    &devices[d].store,
                    conv,
                    &format!("message {at} from {d}"),
                    at,
                );
            }
            Op::Setting(d, k, v) => {
                let s = &devices[d].store;
                if v == 0 {
                    s.delete_setting(&format!("k{k}")).unwrap();
                } else {
                    s.set_setting(&format!("k{k}"), &format!("v{v}")).unwrap();
                }
            }
            Op::Describe(d, n) => {
                let s = &devices[d].store;
                let mut c = s.companion(mira.id).unwrap();
                c.description = format!("description {n} at {at}");
                c.updated_at = Timestamp(at);
                s.update_companion(&c).unwrap();
            }
            Op::NewCompanion(d) => {
                let c = companion(&devices[d].store, &format!("C{at}"), at);
                let cv = conversation(&devices[d].store, c.id, at);
                append(&devices[d].store, cv.id, "first", at);
            }
            Op::Sync(d, drop, dup, shuffle, seed) => {
                let mut rng = Rng(seed | 1);
                devices[d].pump_with(&mut relay, &mut |n| {
                    let mut order = Vec::new();
                    for i in 0..n {
                        if rng.below(1000) < u64::from(drop) {
                            continue;
                        }
                        order.push(i);
                        if rng.below(1000) < u64::from(dup) {
                            order.push(i);
                        }
                    }
                    if shuffle {
                        for i in (1..order.len()).rev() {
                            let j = usize::try_from(rng.below(i as u64 + 1)).unwrap();
                            order.swap(i, j);
                        }
                    }
                    order
                });
            }
            Op::Reconnect(d) => devices[d].go_offline(&mut relay),
            Op::Restart(d) => {
                devices[d].restart(&mut relay);
                devices[d].client.set_snapshot_every(snapshot_every);
            }
        }
    }
    // Delivery resumes: everyone reconnects and syncs reliably.
    for d in devices.iter_mut() {
        d.go_offline(&mut relay);
    }
    settle(&mut devices, &mut relay);
    assert_converged(&devices);
    // One generation of each document is left, everywhere.
    let on_relay = relay.docs(devices[0].client.keys().space()).len();
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(device_doc_count(&d.store), on_relay, "device {i}");
    }
    if forgotten.is_empty() {
        return;
    }
    let histories: Vec<_> = devices.iter().map(|d| device_histories(&d.store)).collect();
    let relay_history = relay_histories(&relay, devices[0].client.keys());
    for text in &forgotten {
        for (i, h) in histories.iter().enumerate() {
            let held = holding(h, text);
            assert!(held.is_empty(), "{text:?}: device {i} keeps {held:?}");
        }
        let held = holding(&relay_history, text);
        assert!(held.is_empty(), "{text:?}: the relay keeps {held:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn two_devices_converge_despite_a_faulty_network(
        ops in prop::collection::vec(op(2), 1..40),
        snapshot_every in 1..6u64,
        echo in any::<bool>(),
    ) {
        run(2, ops, snapshot_every, echo);
    }

    #[test]
    fn three_devices_converge_despite_a_faulty_network(
        ops in prop::collection::vec(op(3), 1..40),
        snapshot_every in 1..6u64,
        echo in any::<bool>(),
    ) {
        run(3, ops, snapshot_every, echo);
    }
}
