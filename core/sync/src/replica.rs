//! The device's Automerge documents, by document id, and their link to the store; and their
//! generations: how forgetting starts a document over without its history, and how devices
//! move to the newest generation without losing their own edits or bringing back what was
//! forgotten (docs/SYNC.md, "Forgetting").

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use automerge::{ActorId, AutoCommit, ChangeHash};
use nexus_common::MemoryId;
use nexus_store::Store;
use nexus_sync_protocol::DocId;

use crate::crypto::{DocIds, random_bytes};
use crate::doc::{
    DocName, FORGOTTEN, Field, GENERATION_PARTS, GenName, PREVIOUS, Record, Touched, View, Writer,
    declared_name, new_document, new_generation_document, read_keys, read_view, read_view_at,
    touched, write_view,
};
use crate::mapping::{apply, capture, store_documents, store_journal};
use crate::{Result, SyncError};

/// Prefix of the sync state keys holding documents.
const DOC_KEY: &str = "doc/";

#[derive(Debug)]
struct Slot {
    name: Option<DocName>,
    /// Which generation of the document this is (0: the first).
    generation: u32,
    doc: AutoCommit,
    /// The store holds what the document holds (as of the last capture or apply). Documents
    /// received from another device are not, until their first full apply succeeds; they are
    /// not captured before that (their entities would look deleted).
    applied: bool,
    /// Changed since the last save.
    dirty: bool,
    /// For conversations: `(updated_at, message count)` at the last capture, to skip unchanged
    /// ones cheaply; for the journal: `(newest time, entry count)`.
    seen: Seen,
}

/// `(updated_at, message count)` of a conversation at its last capture.
type Seen = Option<(i64, usize)>;

/// A saved document: flags (bit 0: applied, bit 1: `seen` follows), then `seen` as two
/// little-endian 8-byte integers if flagged, then the Automerge document.
fn encode_slot(applied: bool, seen: Seen, doc: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(doc.len() + 17);
    value.push(u8::from(applied) | if seen.is_some() { 2 } else { 0 });
    if let Some((at, count)) = seen {
        value.extend_from_slice(&at.to_le_bytes());
        value.extend_from_slice(&(count as u64).to_le_bytes());
    }
    value.extend_from_slice(doc);
    value
}

fn decode_slot(value: &[u8]) -> Option<(bool, Seen, &[u8])> {
    let (flags, rest) = value.split_first()?;
    if flags & 2 == 0 {
        return Some((flags & 1 == 1, None, rest));
    }
    let at = i64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let count = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    Some((
        flags & 1 == 1,
        Some((at, usize::try_from(count).ok()?)),
        rest.get(16..)?,
    ))
}

/// A document as [`Replica::documents`] lists it: id, name and generation (if known), bytes.
pub type Kept = (DocId, Option<(DocName, u32)>, Vec<u8>);

/// What the server must be told after the replica changed generations (the client turns these
/// into session requests, in this order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Upload this new generation: the whole document, as a snapshot covering nothing.
    Upload(DocId, Vec<u8>),
    /// Push these changes (Automerge change chunks) of a document.
    Push(DocId, Vec<u8>),
    /// Retire this document (an older generation): forget its cursor and queued changes and
    /// delete it on the server.
    Retire(DocId),
}

/// The documents of one device in one space.
#[derive(Debug)]
pub struct Replica {
    actor: ActorId,
    docs: BTreeMap<DocId, Slot>,
    /// Documents dropped since the last save: their sync state is deleted with the next save.
    removed: BTreeSet<DocId>,
    actions: Vec<Action>,
    /// Prefix of the sync state keys of the documents (`doc/`, or a share's own).
    prefix: String,
}

fn am(e: automerge::AutomergeError) -> SyncError {
    SyncError::Automerge(e.to_string())
}

fn order(name: Option<&DocName>) -> u8 {
    match name {
        Some(DocName::Settings | DocName::Space) => 0,
        Some(DocName::Companion(_)) => 1,
        Some(DocName::Conversation(_)) => 2,
        Some(DocName::Journal) => 3,
        None => 4,
    }
}

impl Replica {
    /// No documents yet; this device writes as `actor`.
    pub fn new(actor: ActorId) -> Self {
        Self::new_under(actor, DOC_KEY)
    }

    /// No documents yet, saved under sync state keys starting with `prefix` (a share keeps its
    /// documents apart from the device's own space).
    pub fn new_under(actor: ActorId, prefix: &str) -> Self {
        Self {
            actor,
            docs: BTreeMap::new(),
            removed: BTreeSet::new(),
            actions: Vec::new(),
            prefix: prefix.to_owned(),
        }
    }

    /// What the server must be told since the last call (see [`Action`]).
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// The documents saved in the store's sync state.
    pub fn load(store: &dyn Store, actor: ActorId) -> Result<Self> {
        Self::load_under(store, actor, DOC_KEY)
    }

    /// The documents saved under sync state keys starting with `prefix`.
    pub fn load_under(store: &dyn Store, actor: ActorId, prefix: &str) -> Result<Self> {
        let mut replica = Self::new_under(actor.clone(), prefix);
        for key in store.sync_keys(prefix)? {
            let Some(value) = store.sync_value(&key)? else {
                continue;
            };
            let id: DocId = key[prefix.len()..]
                .parse()
                .map_err(|_| SyncError::Schema(format!("bad sync state key {key:?}")))?;
            let (applied, seen, bytes) = decode_slot(&value)
                .ok_or_else(|| SyncError::Schema(format!("damaged sync state {key:?}")))?;
            let mut doc = AutoCommit::load(bytes).map_err(am)?;
            doc.set_actor(actor.clone());
            let generation = declared_name(&doc).and_then(|n| n.parse::<GenName>().ok());
            replica.docs.insert(
                id,
                Slot {
                    name: generation.as_ref().map(|g| g.name),
                    generation: generation.map_or(0, |g| g.number),
                    doc,
                    applied,
                    dirty: false,
                    seen,
                },
            );
        }
        Ok(replica)
    }

    /// Every document a device keeps in its store's sync state, history included (an audit of
    /// what the device holds; see [`crate::doc::history_strings`]).
    pub fn kept(store: &dyn Store) -> Result<Vec<Kept>> {
        Ok(Self::load(store, ActorId::random())?.documents())
    }

    /// The sync state values of the documents changed since the last call.
    pub fn dirty_values(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut values: Vec<(String, Option<Vec<u8>>)> = std::mem::take(&mut self.removed)
            .into_iter()
            .map(|id| (format!("{}{id}", self.prefix), None))
            .collect();
        for (id, slot) in &mut self.docs {
            if slot.dirty {
                let value = encode_slot(slot.applied, slot.seen, &slot.doc.save());
                values.push((format!("{}{id}", self.prefix), Some(value)));
                slot.dirty = false;
            }
        }
        values
    }

    /// Writes the store's content into the documents. Returns, per document that changed, the
    /// new changes (Automerge change chunks, concatenated) to push.
    pub fn capture(
        &mut self,
        store: &dyn Store,
        keys: &dyn DocIds,
    ) -> Result<Vec<(DocId, Vec<u8>)>> {
        let mut names: BTreeSet<DocName> = store_documents(store)?.into_iter().collect();
        // Documents of entities this device had: a missing entity was deleted here.
        names.extend(
            self.docs
                .values()
                .filter(|s| s.applied)
                .filter_map(|s| s.name),
        );
        let current = self.current_ids();
        let mut out = Vec::new();
        let mut forgotten = Vec::new();
        for name in names {
            let id = current
                .get(&name)
                .cloned()
                .unwrap_or_else(|| keys.doc_id(&name.to_string()));
            let slot = self.docs.entry(id.clone()).or_insert_with(|| Slot {
                name: Some(name),
                generation: 0,
                doc: AutoCommit::new().with_actor(self.actor.clone()),
                applied: true,
                dirty: true,
                seen: None,
            });
            if !slot.applied {
                continue;
            }
            if slot.name.is_none() {
                slot.name = Some(name);
            }
            let mut seen = None;
            if let DocName::Conversation(cid) = name
                && let Ok(c) = store.conversation(cid)
            {
                seen = Some((c.updated_at.0, store.message_count(cid)?));
                if seen == slot.seen {
                    continue;
                }
            }
            if name == DocName::Journal {
                // The journal only grows: its size and newest time tell whether it changed.
                let entries = store_journal(store)?;
                seen = Some((
                    entries.iter().map(|e| e.at.0).max().unwrap_or(i64::MIN),
                    entries.len(),
                ));
                if seen == slot.seen {
                    continue;
                }
            }
            let before: Vec<ChangeHash> = slot.doc.get_heads();
            if before.is_empty() {
                slot.doc = new_document(&name, &self.actor);
            }
            let view = if name == DocName::Journal {
                // Capturing the journal only adds entries: their keys are all it needs.
                read_keys(&slot.doc, crate::mapping::READINGS)
            } else {
                read_view(&slot.doc, name.layout())
            };
            capture(store, &name, &view, &mut Writer::new(&mut slot.doc))?;
            slot.doc.commit();
            if slot.seen != seen {
                slot.seen = seen;
                slot.dirty = true;
            }
            let changes = slot.doc.get_changes(&before);
            if !changes.is_empty() {
                slot.dirty = true;
                if let Some(f) = forgetting(&name, &view, &slot.doc) {
                    // Something was forgotten: its content is in this document's history,
                    // so the document starts over (nothing of this capture is pushed).
                    forgotten.push((id, name, f));
                    continue;
                }
                let mut bytes = Vec::new();
                for change in &changes {
                    bytes.extend_from_slice(change.raw_bytes());
                }
                out.push((id, bytes));
            }
        }
        for (id, name, f) in forgotten {
            self.start_over(keys, &id, name, f)?;
        }
        Ok(out)
    }

    /// The current generation of each document here: the highest generation, then the lowest
    /// id (every device picks the same).
    pub fn current_ids(&self) -> BTreeMap<DocName, DocId> {
        let mut best: BTreeMap<DocName, (u32, Reverse<&DocId>)> = BTreeMap::new();
        for (id, slot) in &self.docs {
            if let Some(name) = slot.name {
                let rank = (slot.generation, Reverse(id));
                if best.get(&name).is_none_or(|b| rank > *b) {
                    best.insert(name, rank);
                }
            }
        }
        best.into_iter()
            .map(|(name, (_, Reverse(id)))| (name, id.clone()))
            .collect()
    }

    /// The id of the current generation of `name` (of its first generation if this device has
    /// none).
    pub fn current_id(&self, keys: &dyn DocIds, name: &DocName) -> DocId {
        self.docs
            .iter()
            .filter(|(_, s)| s.name.as_ref() == Some(name))
            .max_by_key(|(id, s)| (s.generation, Reverse(*id)))
            .map_or_else(|| keys.doc_id(&name.to_string()), |(id, _)| id.clone())
    }

    /// The full name (with generation) of the current generation of document `name`.
    pub fn current_name(&self, keys: &dyn DocIds, name: &DocName) -> GenName {
        let id = self.current_id(keys, name);
        self.docs
            .get(&id)
            .and_then(|s| declared_name(&s.doc))
            .and_then(|n| n.parse::<GenName>().ok())
            .filter(|g| g.name == *name)
            .unwrap_or_else(|| GenName::first(*name))
    }

    /// Starts a new generation of document `id` after this device forgot something in it: a
    /// fresh document holding its current state (with the capture's deletions), the tombstones
    /// and the id of the generation it replaces.
    fn start_over(
        &mut self,
        keys: &dyn DocIds,
        id: &DocId,
        name: DocName,
        f: Forgetting,
    ) -> Result<()> {
        let Some(slot) = self.docs.get(id) else {
            return Ok(());
        };
        let mut view = read_view(&slot.doc, name.layout());
        view.collections
            .entry(FORGOTTEN.to_owned())
            .or_default()
            .extend(f.gone);
        if f.deleted {
            view = tombstone_only(&name, &view);
        }
        view.collections
            .entry(PREVIOUS.to_owned())
            .or_default()
            .insert(id.to_string(), previous_record(slot.generation));
        let (number, seen) = (slot.generation + 1, slot.seen);
        tracing::debug!("sync: {name} starts generation {number} (something was forgotten)");
        self.replace(
            keys,
            std::slice::from_ref(id),
            name,
            number,
            &view,
            seen,
            true,
        )
    }

    /// Replaces documents `old` (generations of `name`) by a new generation `number` holding
    /// `view`; queues its upload and the retirement of `old`.
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        keys: &dyn DocIds,
        old: &[DocId],
        name: DocName,
        number: u32,
        view: &View,
        seen: Seen,
        applied: bool,
    ) -> Result<()> {
        let nonce: String = random_bytes::<8>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let generation = GenName {
            name,
            number,
            nonce: Some(nonce),
        };
        let id = keys.doc_id(&generation.to_string());
        let mut doc = new_generation_document(&generation, &self.actor);
        write_view(
            &mut Writer::new(&mut doc),
            name.layout(),
            view,
            &View::default(),
        )?;
        doc.commit();
        let bytes = doc.save();
        for o in old {
            self.docs.remove(o);
            self.removed.insert(o.clone());
        }
        self.removed.remove(&id);
        self.docs.insert(
            id.clone(),
            Slot {
                name: Some(name),
                generation: number,
                doc,
                applied,
                dirty: true,
                seen,
            },
        );
        self.actions.push(Action::Upload(id, bytes));
        self.actions.extend(old.iter().cloned().map(Action::Retire));
        Ok(())
    }

    /// Several generations of `name` are here (another device started one, possibly at the
    /// same time as this device): the winner (highest generation, then lowest id) takes in
    /// what only the others hold (this device's offline edits among them), everything
    /// forgotten in any of them is forgotten in the store and the winner, and the others are
    /// retired. If the winner itself holds something forgotten (two devices forgot different
    /// things at once), the merged state starts yet another generation.
    fn resolve(&mut self, store: &dyn Store, keys: &dyn DocIds, name: DocName) -> Result<()> {
        let ids: Vec<DocId> = self
            .docs
            .iter()
            .filter(|(_, s)| s.name == Some(name))
            .map(|(id, _)| id.clone())
            .collect();
        let Some(winner) = ids
            .iter()
            .max_by_key(|id| (self.docs[*id].generation, Reverse(*id)))
            .cloned()
        else {
            return Ok(());
        };
        let current = ids
            .iter()
            .filter(|id| self.docs[*id].applied)
            .max_by_key(|id| (self.docs[*id].generation, Reverse(*id)))
            .cloned();
        let layout = name.layout();
        let views: BTreeMap<DocId, View> = ids
            .iter()
            .map(|id| (id.clone(), read_view(&self.docs[id].doc, layout)))
            .collect();
        let others: Vec<&View> = ids
            .iter()
            .filter(|id| **id != winner)
            .map(|id| &views[id])
            .collect();
        let mut merged = merge_views(&name, &views[&winner], &others);
        let previous = merged.collections.entry(PREVIOUS.to_owned()).or_default();
        for id in ids.iter().filter(|id| **id != winner) {
            previous.insert(id.to_string(), previous_record(self.docs[id].generation));
        }

        let before = current
            .as_ref()
            .map(|c| views[c].clone())
            .unwrap_or_default();
        let applied = match apply(store, &name, &before, &merged, current.is_none()) {
            Ok(()) => {
                forget_in_store(store, &name, merged.collection(FORGOTTEN))?;
                true
            }
            Err(SyncError::Deferred(why)) => {
                tracing::debug!("sync: deferred {why}");
                false
            }
            Err(e) => return Err(e),
        };

        let stale = holds_forgotten(&name, &views[&winner], &merged);
        let number = self.docs[&winner].generation;
        tracing::debug!(
            "sync: {} generations of {name} here; generation {number} wins{}",
            ids.len(),
            if stale {
                " but holds something forgotten: starting over"
            } else {
                ""
            }
        );
        if stale {
            return self.replace(keys, &ids, name, number + 1, &merged, None, applied);
        }
        let Some(slot) = self.docs.get_mut(&winner) else {
            return Ok(());
        };
        let heads = slot.doc.get_heads();
        write_view(
            &mut Writer::new(&mut slot.doc),
            layout,
            &merged,
            &views[&winner],
        )?;
        slot.doc.commit();
        slot.applied = applied;
        slot.dirty = true;
        slot.seen = None;
        let changes = slot.doc.get_changes(&heads);
        if !changes.is_empty() {
            let mut bytes = Vec::new();
            for change in &changes {
                bytes.extend_from_slice(change.raw_bytes());
            }
            self.actions.push(Action::Push(winner.clone(), bytes));
        }
        for id in ids.into_iter().filter(|id| *id != winner) {
            self.docs.remove(&id);
            self.removed.insert(id.clone());
            self.actions.push(Action::Retire(id));
        }
        Ok(())
    }

    /// After document `id` was applied (wholly, or the parts in `only`): what its generation
    /// parts say takes effect. Forgotten entities leave the store (a device that was offline
    /// still has them), and the generations it replaces are retired (dropped here if present,
    /// deleted on the server in case the device that replaced them could not).
    fn settle_generation(
        &mut self,
        store: &dyn Store,
        id: &DocId,
        only: Option<&Touched>,
    ) -> Result<()> {
        let Some(slot) = self.docs.get(id) else {
            return Ok(());
        };
        let Some(name) = slot.name else {
            return Ok(());
        };
        if slot.generation == 0 {
            return Ok(());
        }
        let wanted = |part: &str| only.is_none_or(|t| t.contains_key(part));
        if wanted(FORGOTTEN) {
            let forgotten = read_keys(&slot.doc, FORGOTTEN);
            forget_in_store(store, &name, forgotten.collection(FORGOTTEN))?;
        }
        if wanted(PREVIOUS) {
            let previous: Vec<DocId> = read_keys(&slot.doc, PREVIOUS)
                .collection(PREVIOUS)
                .keys()
                .filter_map(|k| k.parse().ok())
                .filter(|p| p != id)
                .collect();
            for p in previous {
                if self.docs.remove(&p).is_some() {
                    self.removed.insert(p.clone());
                }
                self.actions.push(Action::Retire(p));
            }
        }
        Ok(())
    }

    /// Merges received Automerge data (changes or a whole document) into document `id` and
    /// writes what it changed into the store. A document seen for the first time must name
    /// itself (its root `name`) with the name whose keyed hash is `id`.
    pub fn receive(
        &mut self,
        store: &dyn Store,
        keys: &dyn DocIds,
        id: &DocId,
        bytes: &[u8],
    ) -> Result<()> {
        self.receive_all(store, keys, id, &[bytes])
    }

    /// [`Replica::receive`] of several chunks at once: the store sees their combined effect
    /// (one read of the document before and after, however many entries arrived).
    pub fn receive_all(
        &mut self,
        store: &dyn Store,
        keys: &dyn DocIds,
        id: &DocId,
        chunks: &[&[u8]],
    ) -> Result<()> {
        let actor = self.actor.clone();
        let slot = self.docs.entry(id.clone()).or_insert_with(|| Slot {
            name: None,
            generation: 0,
            doc: AutoCommit::new().with_actor(actor),
            applied: false,
            dirty: true,
            seen: None,
        });
        let heads = slot.doc.get_heads();
        // One call for all: Automerge applies a batch of changes far faster than the same
        // changes one by one (docs/BENCHMARKS.md).
        let all = chunks.concat();
        slot.doc.load_incremental(&all).map_err(am)?;
        if slot.doc.get_heads() == heads {
            return Ok(()); // nothing new (a duplicate)
        }
        slot.dirty = true;
        slot.seen = None;
        if slot.name.is_none()
            && let Some(declared) = declared_name(&slot.doc)
        {
            let generation: GenName = declared.parse()?;
            if keys.doc_id(&declared) != *id {
                self.docs.remove(id);
                return Err(SyncError::Schema(format!(
                    "document {id} calls itself {declared:?}, which is another document's name"
                )));
            }
            slot.name = Some(generation.name);
            slot.generation = generation.number;
        }
        let Some(name) = slot.name else {
            return Ok(()); // its first change has not arrived yet
        };
        if self
            .docs
            .iter()
            .any(|(other, s)| other != id && s.name == Some(name))
        {
            return self.resolve(store, keys, name);
        }
        let Some(slot) = self.docs.get_mut(id) else {
            return Ok(());
        };
        let mut only = None;
        let (before, mut after) = if slot.applied {
            // Only what the merge touched, before and after.
            let after_heads = slot.doc.get_heads();
            let touched = touched(&mut slot.doc, &heads, &after_heads);
            let layout = name.layout();
            let views = (
                read_view_at(&slot.doc, layout, Some(&heads), Some(&touched)),
                read_view_at(&slot.doc, layout, None, Some(&touched)),
            );
            only = Some(touched);
            views
        } else {
            (Default::default(), read_view(&slot.doc, name.layout()))
        };
        // Never write into the store what the document says was forgotten.
        strip_forgotten(&mut after, &slot.doc, name.layout());
        match apply(store, &name, &before, &after, !slot.applied) {
            Ok(()) => {
                slot.applied = true;
                self.settle_generation(store, id, only.as_ref())
            }
            Err(SyncError::Deferred(why)) => {
                tracing::debug!("sync: deferred {why}");
                slot.applied = false;
                Ok(())
            }
            Err(e) => {
                slot.applied = false;
                Err(e)
            }
        }
    }

    /// Edits document `name` directly (data that has no store table yet, like wearable
    /// samples in the journal). Returns the new changes to push, if any.
    pub fn edit(
        &mut self,
        keys: &dyn DocIds,
        name: &DocName,
        f: impl FnOnce(&mut Writer<'_>) -> Result<()>,
    ) -> Result<Option<(DocId, Vec<u8>)>> {
        let id = self.current_id(keys, name);
        let slot = self.docs.entry(id.clone()).or_insert_with(|| Slot {
            name: Some(*name),
            generation: 0,
            doc: AutoCommit::new().with_actor(self.actor.clone()),
            applied: true,
            dirty: true,
            seen: None,
        });
        let before = slot.doc.get_heads();
        if before.is_empty() {
            slot.doc = new_document(name, &self.actor);
        }
        f(&mut Writer::new(&mut slot.doc))?;
        slot.doc.commit();
        let changes = slot.doc.get_changes(&before);
        if changes.is_empty() {
            return Ok(None);
        }
        slot.dirty = true;
        let mut bytes = Vec::new();
        for change in &changes {
            bytes.extend_from_slice(change.raw_bytes());
        }
        Ok(Some((id, bytes)))
    }

    /// The view of document `name`, if this device has it.
    pub fn view(&self, keys: &dyn DocIds, name: &DocName) -> Option<View> {
        self.docs
            .get(&self.current_id(keys, name))
            .map(|s| read_view(&s.doc, name.layout()))
    }

    /// Applies documents that could not be applied yet (parents first). Returns how many remain.
    pub fn retry(&mut self, store: &dyn Store) -> Result<usize> {
        let mut waiting: Vec<(DocId, DocName)> = self
            .docs
            .iter()
            .filter(|(_, s)| !s.applied)
            .filter_map(|(id, s)| Some((id.clone(), s.name?)))
            .collect();
        waiting.sort_by_key(|(_, name)| order(Some(name)));
        let mut remaining = 0;
        for (id, name) in waiting {
            let Some(slot) = self.docs.get_mut(&id) else {
                continue;
            };
            let mut after = read_view(&slot.doc, name.layout());
            strip_forgotten(&mut after, &slot.doc, name.layout());
            match apply(store, &name, &Default::default(), &after, true) {
                Ok(()) => {
                    slot.applied = true;
                    slot.dirty = true;
                    self.settle_generation(store, &id, None)?;
                }
                Err(SyncError::Deferred(_)) => remaining += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(remaining)
    }

    /// The whole document, for a snapshot: `None` while it waits for changes it depends on (a
    /// snapshot must contain everything it claims to cover).
    pub fn snapshot(&mut self, id: &DocId) -> Option<Vec<u8>> {
        let slot = self.docs.get_mut(id)?;
        slot.doc
            .get_missing_deps(&[])
            .is_empty()
            .then(|| slot.doc.save())
    }

    /// The document named `name`, if this device has it.
    pub fn document(&mut self, keys: &dyn DocIds, name: &DocName) -> Option<&mut AutoCommit> {
        let id = self.current_id(keys, name);
        self.docs.get_mut(&id).map(|s| &mut s.doc)
    }

    /// Names of the documents this device has (those whose name is known).
    pub fn names(&self) -> Vec<DocName> {
        let names: BTreeSet<DocName> = self.docs.values().filter_map(|s| s.name).collect();
        names.into_iter().collect()
    }

    /// Every document here, by id, with its name and generation if known, and its bytes
    /// (Automerge's format, history included): what this device keeps of each.
    pub fn documents(&mut self) -> Vec<Kept> {
        self.docs
            .iter_mut()
            .map(|(id, s)| (id.clone(), s.name.map(|n| (n, s.generation)), s.doc.save()))
            .collect()
    }

    /// Documents received but not applied to the store yet.
    pub fn waiting(&self) -> usize {
        self.docs.values().filter(|s| !s.applied).count()
    }
}

// --- generations -----------------------------------------------------------------------------

/// What a capture forgot in a document.
#[derive(Debug, Default)]
struct Forgetting {
    /// Tombstones of the entities that are gone (key to `{part}`).
    gone: BTreeMap<String, Record>,
    /// The whole document's entity was deleted (companion or conversation).
    deleted: bool,
}

fn tombstone(part: &str) -> Record {
    Record::from([("part".to_owned(), Field::Str(part.to_owned()))])
}

fn previous_record(generation: u32) -> Record {
    Record::from([("generation".to_owned(), Field::Int(i64::from(generation)))])
}

/// The record holding a document's own deletion flag, if its kind has one.
fn own_record(name: &DocName) -> Option<&'static str> {
    match name {
        DocName::Companion(_) => Some("profile"),
        DocName::Conversation(_) => Some("conversation"),
        DocName::Settings | DocName::Journal | DocName::Space => None,
    }
}

fn is_deleted(name: &DocName, view: &View) -> bool {
    own_record(name).is_some_and(|r| view.record(r).get("deleted") == Some(&Field::Bool(true)))
}

/// Whether the capture that led from `before` to `doc` forgot something: memories deleted,
/// or the companion or conversation itself deleted. (Settings and the journal are never
/// forgotten entity by entity: the store deletes neither except in `wipe`.)
fn forgetting(name: &DocName, before: &View, doc: &AutoCommit) -> Option<Forgetting> {
    let own = own_record(name)?;
    let head = read_view_at(doc, name.layout(), None, Some(&Touched::new()));
    let deleted = !is_deleted(name, before)
        && !before.record(own).is_empty()
        && head.record(own).get("deleted") == Some(&Field::Bool(true));
    let mut gone = BTreeMap::new();
    if let DocName::Companion(_) = name {
        let now = read_keys(doc, "memories");
        gone = before
            .collection("memories")
            .keys()
            .filter(|k| !now.collection("memories").contains_key(*k))
            .map(|k| (k.clone(), tombstone("memories")))
            .collect();
    }
    (deleted || !gone.is_empty()).then_some(Forgetting { gone, deleted })
}

/// A deleted companion or conversation: only its deletion flag (and the generation parts).
fn tombstone_only(name: &DocName, view: &View) -> View {
    let mut out = View::default();
    if let Some(own) = own_record(name) {
        out.records.insert(
            own.to_owned(),
            Record::from([("deleted".to_owned(), Field::Bool(true))]),
        );
    }
    for part in GENERATION_PARTS {
        if let Some(c) = view.collections.get(part) {
            out.collections.insert(part.to_owned(), c.clone());
        }
    }
    out
}

/// Which of two versions of a record is newer: by `updated_at`, then `last_used_at`, then
/// whether it is superseded (supersession only moves forward). Equal means not newer.
fn newer(a: &Record, b: &Record) -> bool {
    let rank = |r: &Record| {
        (
            r.get("updated_at")
                .and_then(Field::as_i64)
                .unwrap_or(i64::MIN),
            r.get("last_used_at")
                .and_then(Field::as_i64)
                .unwrap_or(i64::MIN),
            matches!(r.get("superseded_by"), Some(Field::Str(_))),
        )
    };
    rank(a) > rank(b)
}

/// The state of several generations of one document taken together: the winner's, plus what
/// only the others hold, with the newer version of anything two of them hold; without
/// anything any of them forgot; only the deletion if any of them is deleted.
fn merge_views(name: &DocName, winner: &View, others: &[&View]) -> View {
    let layout = name.layout();
    let mut out = winner.clone();
    for other in others {
        for part in layout.records {
            if newer(other.record(part), out.record(part)) {
                out.records
                    .insert((*part).to_owned(), other.record(part).clone());
            }
        }
        for part in layout.collections.iter().chain(&GENERATION_PARTS) {
            let target = out.collections.entry((*part).to_owned()).or_default();
            for (key, record) in other.collection(part) {
                if target.get(key).is_none_or(|mine| newer(record, mine)) {
                    target.insert(key.clone(), record.clone());
                }
            }
        }
    }
    let forgotten: BTreeSet<String> = out.collection(FORGOTTEN).keys().cloned().collect();
    for part in layout.collections {
        if let Some(c) = out.collections.get_mut(*part) {
            c.retain(|k, _| !forgotten.contains(k));
        }
    }
    let deleted = std::iter::once(winner)
        .chain(others.iter().copied())
        .any(|v| is_deleted(name, v));
    if deleted {
        out = tombstone_only(name, &out);
    }
    out
}

/// Whether `view` (a generation's content) holds something the merged state forgot: then its
/// history does too, and it cannot stay.
fn holds_forgotten(name: &DocName, view: &View, merged: &View) -> bool {
    if is_deleted(name, merged) {
        let mut bare = tombstone_only(name, view);
        for part in GENERATION_PARTS {
            bare.collections.remove(part);
        }
        let mut mine = view.clone();
        for part in GENERATION_PARTS {
            mine.collections.remove(part);
        }
        mine.collections.retain(|_, c| !c.is_empty());
        mine.records.retain(|_, r| !r.is_empty());
        return mine != bare;
    }
    let forgotten = merged.collection(FORGOTTEN);
    name.layout().collections.iter().any(|part| {
        view.collection(part)
            .keys()
            .any(|k| forgotten.contains_key(k))
    })
}

/// Removes from `view` the entities the document's tombstones name.
fn strip_forgotten(view: &mut View, doc: &AutoCommit, layout: crate::doc::Layout) {
    let forgotten = read_keys(doc, FORGOTTEN);
    let forgotten = forgotten.collection(FORGOTTEN);
    if forgotten.is_empty() {
        return;
    }
    for part in layout.collections {
        if let Some(c) = view.collections.get_mut(*part) {
            c.retain(|k, _| !forgotten.contains_key(k));
        }
    }
}

/// Deletes from the store the entities tombstoned in a document of `name` (a device that was
/// offline during the forgetting still has them). Missing ones are ignored.
fn forget_in_store(
    store: &dyn Store,
    name: &DocName,
    forgotten: &BTreeMap<String, Record>,
) -> Result<()> {
    if let DocName::Companion(_) = name {
        let ids: Vec<MemoryId> = forgotten
            .iter()
            .filter(|(_, r)| r.get("part").and_then(Field::as_str) == Some("memories"))
            .filter_map(|(k, _)| k.parse().ok())
            .collect();
        if !ids.is_empty() {
            store.delete_memories(&ids)?;
        }
    }
    Ok(())
}
