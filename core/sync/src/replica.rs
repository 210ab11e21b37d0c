//! The device's Automerge documents, by document id, and their link to the store.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ActorId, AutoCommit, ChangeHash};
use nexus_store::Store;
use nexus_sync_protocol::DocId;

use crate::crypto::DocIds;
use crate::doc::{
    DocName, Writer, declared_name, new_document, read_keys, read_view, read_view_at, touched,
};
use crate::mapping::{apply, capture, store_documents, store_journal};
use crate::{Result, SyncError};

/// Prefix of the sync state keys holding documents.
const DOC_KEY: &str = "doc/";

#[derive(Debug)]
struct Slot {
    name: Option<DocName>,
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

/// The documents of one device in one space.
#[derive(Debug)]
pub struct Replica {
    actor: ActorId,
    docs: BTreeMap<DocId, Slot>,
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
            prefix: prefix.to_owned(),
        }
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
            let name = declared_name(&doc).and_then(|n| n.parse().ok());
            replica.docs.insert(
                id,
                Slot {
                    name,
                    doc,
                    applied,
                    dirty: false,
                    seen,
                },
            );
        }
        Ok(replica)
    }

    /// The sync state values of the documents changed since the last call.
    pub fn dirty_values(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut values = Vec::new();
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
        let mut out = Vec::new();
        for name in names {
            let id = keys.doc_id(&name.to_string());
            let slot = self.docs.entry(id.clone()).or_insert_with(|| Slot {
                name: Some(name),
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
                let mut bytes = Vec::new();
                for change in &changes {
                    bytes.extend_from_slice(change.raw_bytes());
                }
                slot.dirty = true;
                out.push((id, bytes));
            }
        }
        Ok(out)
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
            let name: DocName = declared.parse()?;
            if keys.doc_id(&declared) != *id {
                self.docs.remove(id);
                return Err(SyncError::Schema(format!(
                    "document {id} calls itself {declared:?}, which is another document's name"
                )));
            }
            slot.name = Some(name);
        }
        let Some(name) = slot.name else {
            return Ok(()); // its first change has not arrived yet
        };
        let (before, after) = if slot.applied {
            // Only what the merge touched, before and after.
            let after_heads = slot.doc.get_heads();
            let touched = touched(&mut slot.doc, &heads, &after_heads);
            let layout = name.layout();
            (
                read_view_at(&slot.doc, layout, Some(&heads), Some(&touched)),
                read_view_at(&slot.doc, layout, None, Some(&touched)),
            )
        } else {
            (Default::default(), read_view(&slot.doc, name.layout()))
        };
        match apply(store, &name, &before, &after, !slot.applied) {
            Ok(()) => {
                slot.applied = true;
                Ok(())
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
        let id = keys.doc_id(&name.to_string());
        let slot = self.docs.entry(id.clone()).or_insert_with(|| Slot {
            name: Some(*name),
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
    pub fn view(&self, keys: &dyn DocIds, name: &DocName) -> Option<crate::doc::View> {
        self.docs
            .get(&keys.doc_id(&name.to_string()))
            .map(|s| read_view(&s.doc, name.layout()))
    }

    /// Applies documents that could not be applied yet (parents first). Returns how many remain.
    pub fn retry(&mut self, store: &dyn Store) -> Result<usize> {
        let mut waiting: Vec<(&DocId, &mut Slot)> = self
            .docs
            .iter_mut()
            .filter(|(_, s)| !s.applied && s.name.is_some())
            .collect();
        waiting.sort_by_key(|(_, s)| order(s.name.as_ref()));
        let mut remaining = 0;
        for (_, slot) in waiting {
            let Some(name) = slot.name else { continue };
            let after = read_view(&slot.doc, name.layout());
            match apply(store, &name, &Default::default(), &after, true) {
                Ok(()) => {
                    slot.applied = true;
                    slot.dirty = true;
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
        self.docs
            .get_mut(&keys.doc_id(&name.to_string()))
            .map(|s| &mut s.doc)
    }

    /// Ids of the documents this device has.
    pub fn ids(&self) -> Vec<DocId> {
        self.docs.keys().cloned().collect()
    }

    /// Names of the documents this device has (those whose name is known).
    pub fn names(&self) -> Vec<DocName> {
        self.docs.values().filter_map(|s| s.name).collect()
    }

    /// Documents received but not applied to the store yet.
    pub fn waiting(&self) -> usize {
        self.docs.values().filter(|s| !s.applied).count()
    }
}
