//! The generic shape of every Nexus document and its reading and writing in Automerge.
//!
//! A document's root map holds `name` (e.g. `companion/<uuid>`), `schema` (1) and, for each
//! part of its [`Layout`], one map:
//! * a **record** (`profile`, `persona`, `conversation`, `settings`): a map of fields to scalars;
//! * a **collection** (`memories`, `messages`, ...): a map of entity keys to records.
//!
//! Every container is created by a deterministic first change (the *skeleton*: a fixed actor,
//! time 0), so two devices that create the same document independently produce the same change
//! and their containers are the same objects after a merge; nothing a device writes later can
//! hide another device's writes behind a conflicting container. Entities of a collection are
//! created by one device only (their keys are fresh ids), so their records never conflict.
//! Fields are last-writer-wins registers; concurrent writes to different fields both survive.
//!
//! **Generations.** Automerge keeps history, so forgetting something means starting the
//! document over: a new *generation* ([`GenName`]) is a fresh document under the name
//! `<name>#<n>-<nonce>` (a new id for the server), holding the current state, the ids of what
//! was forgotten ([`FORGOTTEN`], tombstones: ids only, never content) and the ids of the
//! generations it replaces ([`PREVIOUS`]). See docs/SYNC.md.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ValueRef,
};
use nexus_common::{CompanionId, ConversationId};

use crate::{Result, SyncError};

/// Version of the document schema, in each root's `schema`.
pub const SCHEMA_VERSION: i64 = 1;
/// The actor of the skeleton change (the same on every device).
const SKELETON_ACTOR: &[u8; 16] = b"nexus-skeleton-1";

/// Collection of a generation (n >= 1) document: entity key to `{part}` (the collection it was
/// in) for every entity forgotten in this or an earlier generation. Ids only.
pub const FORGOTTEN: &str = "forgotten";
/// Collection of a generation document: document id (hex) to `{generation}` for every earlier
/// generation it replaces (devices retire and delete them).
pub const PREVIOUS: &str = "previous";
/// The parts every generation after the first has besides its layout.
pub const GENERATION_PARTS: [&str; 2] = [FORGOTTEN, PREVIOUS];

/// Which document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocName {
    /// The settings that follow the user (not device-local ones).
    Settings,
    /// Emotion readings and wearable samples.
    Journal,
    /// One companion: profile, persona state and history, memories.
    Companion(CompanionId),
    /// One conversation and its messages.
    Conversation(ConversationId),
    /// The space itself: its devices (public keys, device grants, revocations), the key
    /// epochs' secrets (see [`crate::device`]) and the companions shared with other people
    /// (see [`crate::share`]). Not mapped to the store.
    Space,
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocName::Settings => f.write_str("settings"),
            DocName::Journal => f.write_str("journal"),
            DocName::Companion(id) => write!(f, "companion/{id}"),
            DocName::Conversation(id) => write!(f, "conversation/{id}"),
            DocName::Space => f.write_str("space"),
        }
    }
}

impl FromStr for DocName {
    type Err = SyncError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || SyncError::Schema(format!("unknown document name {s:?}"));
        match s {
            "settings" => Ok(DocName::Settings),
            "journal" => Ok(DocName::Journal),
            "space" => Ok(DocName::Space),
            _ => match s.split_once('/') {
                Some(("companion", id)) => Ok(DocName::Companion(id.parse().map_err(|_| bad())?)),
                Some(("conversation", id)) => {
                    Ok(DocName::Conversation(id.parse().map_err(|_| bad())?))
                }
                _ => Err(bad()),
            },
        }
    }
}

/// One generation of a document: the first one is named like the document
/// (`companion/<uuid>`); later ones `<name>#<n>-<nonce>`, with 16 random hex digits so that two
/// devices that start a generation at the same time make two documents (never two first
/// snapshots of one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenName {
    /// The document.
    pub name: DocName,
    /// 0 for the first generation.
    pub number: u32,
    /// The random part (none for generation 0).
    pub nonce: Option<String>,
}

impl GenName {
    /// The first generation of `name`.
    pub fn first(name: DocName) -> Self {
        Self {
            name,
            number: 0,
            nonce: None,
        }
    }
}

impl fmt::Display for GenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nonce {
            None => write!(f, "{}", self.name),
            Some(nonce) => write!(f, "{}#{}-{nonce}", self.name, self.number),
        }
    }
}

impl FromStr for GenName {
    type Err = SyncError;
    fn from_str(s: &str) -> Result<Self> {
        let Some((name, generation)) = s.split_once('#') else {
            return Ok(Self::first(s.parse()?));
        };
        let bad = || SyncError::Schema(format!("unknown document name {s:?}"));
        let (number, nonce) = generation.split_once('-').ok_or_else(bad)?;
        let number: u32 = number.parse().map_err(|_| bad())?;
        let hex = nonce.len() == 16
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if number == 0 || !hex {
            return Err(bad());
        }
        Ok(Self {
            name: name.parse()?,
            number,
            nonce: Some(nonce.to_owned()),
        })
    }
}

/// The parts of a document of some kind.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Single records.
    pub records: &'static [&'static str],
    /// Collections of records.
    pub collections: &'static [&'static str],
}

impl DocName {
    /// The parts of this kind of document (see docs/SYNC.md).
    pub fn layout(&self) -> Layout {
        match self {
            DocName::Settings => Layout {
                records: &["settings"],
                collections: &[],
            },
            DocName::Journal => Layout {
                records: &[],
                collections: &["readings", "heart_rate"],
            },
            DocName::Companion(_) => Layout {
                records: &["profile", "persona"],
                collections: &["memories", "persona_history"],
            },
            DocName::Conversation(_) => Layout {
                records: &["conversation"],
                collections: &["messages"],
            },
            DocName::Space => Layout {
                records: &[],
                collections: &["devices", "epochs", "shares"],
            },
        }
    }
}

/// A scalar value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// No value.
    Null,
    /// true / false.
    Bool(bool),
    /// An integer (times in ms, counts).
    Int(i64),
    /// A float.
    F64(f64),
    /// Text.
    Str(String),
    /// Bytes (embeddings).
    Bytes(Vec<u8>),
}

impl Field {
    /// The value as an integer (integral floats too: JavaScript writes numbers either way).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Field::Int(i) => Some(i),
            #[allow(clippy::cast_possible_truncation)]
            Field::F64(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        }
    }

    /// The value as a float (integers too).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Field::F64(f) => Some(f),
            #[allow(clippy::cast_precision_loss)]
            Field::Int(i) => Some(i as f64),
            _ => None,
        }
    }

    /// The text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Equal as values: numbers compare numerically (`Int(1)` is `F64(1.0)`).
    pub fn same(&self, other: &Field) -> bool {
        match (self, other) {
            (Field::Int(_) | Field::F64(_), Field::Int(_) | Field::F64(_)) => {
                self.as_f64() == other.as_f64()
            }
            _ => self == other,
        }
    }

    fn from_scalar(value: &automerge::ScalarValueRef<'_>) -> Self {
        use automerge::ScalarValueRef as S;
        match value {
            S::Bytes(b) => Field::Bytes(b.to_vec()),
            S::Str(s) => Field::Str(s.to_string()),
            S::Int(i) | S::Counter(i) | S::Timestamp(i) => Field::Int(*i),
            S::Uint(u) => i64::try_from(*u).map_or(Field::Null, Field::Int),
            S::F64(f) => Field::F64(*f),
            S::Boolean(b) => Field::Bool(*b),
            S::Unknown { .. } | S::Null => Field::Null,
        }
    }

    fn to_scalar(&self) -> ScalarValue {
        match self {
            Field::Null => ScalarValue::Null,
            Field::Bool(b) => ScalarValue::Boolean(*b),
            Field::Int(i) => ScalarValue::Int(*i),
            Field::F64(f) => ScalarValue::F64(*f),
            Field::Str(s) => ScalarValue::Str(s.as_str().into()),
            Field::Bytes(b) => ScalarValue::Bytes(b.clone()),
        }
    }
}

/// One record: field name to value.
pub type Record = BTreeMap<String, Field>;

/// What a document holds, read out of Automerge (or built from the store).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Record name to record (a missing record reads as empty).
    pub records: BTreeMap<String, Record>,
    /// Collection name to entity key to record.
    pub collections: BTreeMap<String, BTreeMap<String, Record>>,
}

impl View {
    /// A record (empty if missing).
    pub fn record(&self, name: &str) -> &Record {
        static EMPTY: Record = BTreeMap::new();
        self.records.get(name).unwrap_or(&EMPTY)
    }

    /// A collection (empty if missing).
    pub fn collection(&self, name: &str) -> &BTreeMap<String, Record> {
        static EMPTY: BTreeMap<String, Record> = BTreeMap::new();
        self.collections.get(name).unwrap_or(&EMPTY)
    }
}

/// A new document with the skeleton of `name`, continuing with `actor`.
pub fn new_document(name: &DocName, actor: &ActorId) -> AutoCommit {
    new_generation_document(&GenName::first(*name), actor)
}

/// A new document with the skeleton of generation `generation` (for generations after the
/// first, with the [`GENERATION_PARTS`] too), continuing with `actor`.
pub fn new_generation_document(generation: &GenName, actor: &ActorId) -> AutoCommit {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(SKELETON_ACTOR));
    let write = |doc: &mut AutoCommit| -> std::result::Result<(), automerge::AutomergeError> {
        doc.put(ROOT, "name", generation.to_string())?;
        doc.put(ROOT, "schema", SCHEMA_VERSION)?;
        let layout = generation.name.layout();
        let extra: &[&str] = if generation.number > 0 {
            &GENERATION_PARTS
        } else {
            &[]
        };
        for part in layout.records.iter().chain(layout.collections).chain(extra) {
            doc.put_object(ROOT, *part, ObjType::Map)?;
        }
        Ok(())
    };
    write(&mut doc).expect("writing a fresh document cannot fail");
    doc.commit_with(CommitOptions::default().with_time(0));
    doc.set_actor(actor.clone());
    doc
}

/// The name a document declares in its root, if any.
pub fn declared_name(doc: &AutoCommit) -> Option<String> {
    match doc.get(ROOT, "name").ok().flatten()? {
        (automerge::Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Heads to read at (`None`: the current state).
type At<'a> = Option<&'a [ChangeHash]>;

fn map_obj_at(doc: &AutoCommit, parent: &ObjId, key: &str, at: At<'_>) -> Option<ObjId> {
    let value = match at {
        Some(heads) => doc.get_at(parent, key, heads),
        None => doc.get(parent, key),
    };
    match value.ok().flatten()? {
        (automerge::Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

fn map_obj(doc: &AutoCommit, parent: &ObjId, key: &str) -> Option<ObjId> {
    map_obj_at(doc, parent, key, None)
}

fn read_record_at(doc: &AutoCommit, obj: &ObjId, at: At<'_>) -> Record {
    let items: Vec<_> = match at {
        Some(heads) => doc.map_range_at(obj, .., heads).collect(),
        None => doc.map_range(obj, ..).collect(),
    };
    items
        .into_iter()
        .filter_map(|item| match &item.value {
            ValueRef::Scalar(s) => Some((item.key.to_string(), Field::from_scalar(s))),
            // Text objects: what JavaScript's Automerge makes of a plain string.
            ValueRef::Object(ObjType::Text) => {
                let text = match at {
                    Some(heads) => doc.text_at(item.id(), heads),
                    None => doc.text(item.id()),
                };
                text.ok().map(|t| (item.key.to_string(), Field::Str(t)))
            }
            ValueRef::Object(_) => None,
        })
        .collect()
}

fn read_record(doc: &AutoCommit, obj: &ObjId) -> Record {
    read_record_at(doc, obj, None)
}

/// What a merge touched, per part: `None` for the whole part, or the entity keys of a
/// collection.
pub type Touched = BTreeMap<String, Option<std::collections::BTreeSet<String>>>;

/// The parts and entities that differ between two states of a document (from Automerge's
/// patches), so that only they are read.
pub fn touched(doc: &mut AutoCommit, before: &[ChangeHash], after: &[ChangeHash]) -> Touched {
    use automerge::{PatchAction, Prop};
    let mut touched = Touched::new();
    for patch in doc.diff(before, after) {
        let mut props: Vec<String> = patch
            .path
            .iter()
            .filter_map(|(_, p)| match p {
                Prop::Map(k) => Some(k.clone()),
                Prop::Seq(_) => None,
            })
            .collect();
        match &patch.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                props.push(key.clone());
            }
            PatchAction::Conflict {
                prop: Prop::Map(key),
            } => props.push(key.clone()),
            _ => {}
        }
        match props.as_slice() {
            [] => {}
            [part] => {
                touched.insert(part.clone(), None);
            }
            [part, key, ..] => {
                if let Some(keys) = touched
                    .entry(part.clone())
                    .or_insert_with(|| Some(Default::default()))
                {
                    keys.insert(key.clone());
                }
            }
        }
    }
    touched
}

/// The entity keys of collection `part` (their records are not read; they read as empty).
pub fn read_keys(doc: &AutoCommit, part: &str) -> View {
    let mut view = View::default();
    if let Some(obj) = map_obj(doc, &ROOT, part) {
        let keys = doc
            .map_range(&obj, ..)
            .filter(|item| matches!(item.value, ValueRef::Object(ObjType::Map)))
            .map(|item| (item.key.to_string(), Record::new()))
            .collect();
        view.collections.insert(part.to_owned(), keys);
    }
    view
}

/// Reads the parts of `layout` out of `doc`.
pub fn read_view(doc: &AutoCommit, layout: Layout) -> View {
    read_view_at(doc, layout, None, None)
}

/// Reads the parts of `layout` (and the [`GENERATION_PARTS`] where present) at `at` (or now);
/// with `only`, just the touched parts and entities (records are read whole, and the first
/// record, the document's own, always).
pub fn read_view_at(doc: &AutoCommit, layout: Layout, at: At<'_>, only: Option<&Touched>) -> View {
    let mut view = View::default();
    for (i, part) in layout.records.iter().enumerate() {
        if i > 0 && only.is_some_and(|t| !t.contains_key(*part)) {
            continue;
        }
        if let Some(obj) = map_obj_at(doc, &ROOT, part, at) {
            view.records
                .insert((*part).to_owned(), read_record_at(doc, &obj, at));
        }
    }
    for part in layout.collections.iter().chain(&GENERATION_PARTS) {
        let keys = match only.map(|t| t.get(*part)) {
            Some(None) => continue,
            Some(Some(Some(keys))) => Some(keys),
            Some(Some(None)) | None => None,
        };
        let Some(obj) = map_obj_at(doc, &ROOT, part, at) else {
            continue;
        };
        let entities: Vec<(String, ObjId)> = match keys {
            Some(keys) => keys
                .iter()
                .filter_map(|k| map_obj_at(doc, &obj, k, at).map(|id| (k.clone(), id)))
                .collect(),
            None => {
                let items: Vec<_> = match at {
                    Some(heads) => doc.map_range_at(&obj, .., heads).collect(),
                    None => doc.map_range(&obj, ..).collect(),
                };
                items
                    .into_iter()
                    .filter_map(|item| match item.value {
                        ValueRef::Object(ObjType::Map) => Some((item.key.to_string(), item.id())),
                        _ => None,
                    })
                    .collect()
            }
        };
        let entities = entities
            .into_iter()
            .map(|(key, id)| (key, read_record_at(doc, &id, at)))
            .collect();
        view.collections.insert((*part).to_owned(), entities);
    }
    view
}

/// Edits of a document that write only what differs (so an unchanged value adds no operation).
#[derive(Debug)]
pub struct Writer<'a> {
    doc: &'a mut AutoCommit,
}

fn am(e: automerge::AutomergeError) -> SyncError {
    SyncError::Automerge(e.to_string())
}

impl<'a> Writer<'a> {
    /// Edits `doc` (in its open transaction; commit afterwards).
    pub fn new(doc: &'a mut AutoCommit) -> Self {
        Self { doc }
    }

    fn part(&mut self, part: &str) -> Result<ObjId> {
        match map_obj(self.doc, &ROOT, part) {
            Some(obj) => Ok(obj),
            // Only reachable for a document from a future schema without this part.
            None => self.doc.put_object(ROOT, part, ObjType::Map).map_err(am),
        }
    }

    fn write_fields(&mut self, obj: &ObjId, fields: &Record, exact: bool) -> Result<()> {
        let current = read_record(self.doc, obj);
        for (key, value) in fields {
            if !current.get(key).is_some_and(|c| c.same(value)) {
                self.doc
                    .put(obj, key.as_str(), value.to_scalar())
                    .map_err(am)?;
            }
        }
        if exact {
            for key in current.keys().filter(|k| !fields.contains_key(*k)) {
                self.doc.delete(obj, key.as_str()).map_err(am)?;
            }
        }
        Ok(())
    }

    /// Sets the given fields of a record (others stay).
    pub fn update_record(&mut self, part: &str, fields: &Record) -> Result<()> {
        let obj = self.part(part)?;
        self.write_fields(&obj, fields, false)
    }

    /// Makes a record hold exactly these fields (deleting the others).
    pub fn set_record(&mut self, part: &str, fields: &Record) -> Result<()> {
        let obj = self.part(part)?;
        self.write_fields(&obj, fields, true)
    }

    /// Creates or updates the entity `key` of a collection with exactly these fields.
    pub fn put_entity(&mut self, part: &str, key: &str, fields: &Record) -> Result<()> {
        let coll = self.part(part)?;
        let obj = match map_obj(self.doc, &coll, key) {
            Some(obj) => obj,
            None => self.doc.put_object(&coll, key, ObjType::Map).map_err(am)?,
        };
        self.write_fields(&obj, fields, true)
    }

    /// Creates the entity `key` of a collection or sets the given fields of it (others stay).
    pub fn update_entity(&mut self, part: &str, key: &str, fields: &Record) -> Result<()> {
        let coll = self.part(part)?;
        let obj = match map_obj(self.doc, &coll, key) {
            Some(obj) => obj,
            None => self.doc.put_object(&coll, key, ObjType::Map).map_err(am)?,
        };
        self.write_fields(&obj, fields, false)
    }

    /// Deletes the entity `key` of a collection, if present.
    pub fn delete_entity(&mut self, part: &str, key: &str) -> Result<()> {
        let coll = self.part(part)?;
        if self.doc.get(&coll, key).map_err(am)?.is_some() {
            self.doc.delete(&coll, key).map_err(am)?;
        }
        Ok(())
    }
}

/// Every string an Automerge document (or a set of its changes) ever held, in its whole
/// history, not only its current state: an audit of what a device or the server keeps (after
/// forgetting, none of what was forgotten). Fails when the bytes are not a complete document
/// (changes whose dependencies are missing cannot be read, so nothing can be ruled out).
pub fn history_strings(bytes: &[u8]) -> Result<Vec<String>> {
    let mut doc = AutoCommit::new();
    doc.load_incremental(bytes).map_err(am)?;
    if !doc.get_missing_deps(&[]).is_empty() {
        return Err(SyncError::Automerge(
            "the changes depend on changes that are not there".into(),
        ));
    }
    let mut out = Vec::new();
    for change in doc.get_changes(&[]) {
        for op in change.decode().operations {
            if let Some(ScalarValue::Str(s)) = op.primitive_value() {
                out.push(s.to_string());
            }
        }
    }
    Ok(out)
}

/// Makes the document hold `view`: the records of `layout`, and exactly the entities of its
/// collections and of the [`GENERATION_PARTS`], writing only what differs from `current` (the
/// document's view now).
pub fn write_view(w: &mut Writer<'_>, layout: Layout, view: &View, current: &View) -> Result<()> {
    for part in layout.records {
        let target = view.record(part);
        if current.record(part) != target {
            w.set_record(part, target)?;
        }
    }
    for part in layout.collections.iter().chain(&GENERATION_PARTS) {
        let (new, old) = (view.collection(part), current.collection(part));
        for (key, record) in new {
            if old.get(key) != Some(record) {
                w.put_entity(part, key, record)?;
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            w.delete_entity(part, key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = CompanionId::new();
        for name in [
            DocName::Settings,
            DocName::Journal,
            DocName::Companion(id),
            DocName::Conversation(ConversationId::new()),
            DocName::Space,
        ] {
            assert_eq!(name.to_string().parse::<DocName>().expect("parse"), name);
        }
        assert!("companion/nope".parse::<DocName>().is_err());
        assert!("other".parse::<DocName>().is_err());
    }

    #[test]
    fn generation_names_round_trip_and_bad_ones_are_refused() {
        let id = CompanionId::new();
        let first = GenName::first(DocName::Companion(id));
        assert_eq!(first.to_string(), format!("companion/{id}"));
        assert_eq!(first.to_string().parse::<GenName>().expect("parse"), first);
        let later = GenName {
            name: DocName::Journal,
            number: 3,
            nonce: Some("0123456789abcdef".into()),
        };
        assert_eq!(later.to_string(), "journal#3-0123456789abcdef");
        assert_eq!(later.to_string().parse::<GenName>().expect("parse"), later);
        for bad in [
            "journal#0-0123456789abcdef",
            "journal#1-0123",
            "journal#1-0123456789ABCDEF",
            "journal#x-0123456789abcdef",
            "journal#1",
            "other#1-0123456789abcdef",
        ] {
            assert!(bad.parse::<GenName>().is_err(), "{bad}");
        }
        let doc = new_generation_document(&later, &ActorId::random());
        assert_eq!(
            declared_name(&doc).as_deref(),
            Some("journal#3-0123456789abcdef")
        );
        let view = read_view(&doc, DocName::Journal.layout());
        assert!(view.collections.contains_key(FORGOTTEN));
        assert!(view.collections.contains_key(PREVIOUS));
        let view = read_view(
            &new_document(&DocName::Journal, &ActorId::random()),
            DocName::Journal.layout(),
        );
        assert!(
            !view.collections.contains_key(FORGOTTEN),
            "not in generation 0"
        );
    }

    #[test]
    fn skeletons_are_identical_on_every_device_so_containers_merge() {
        let mut a = new_document(&DocName::Settings, &ActorId::random());
        let mut b = new_document(&DocName::Settings, &ActorId::random());
        assert_eq!(a.get_heads(), b.get_heads(), "the same skeleton change");
        let rec = |k: &str, v: &str| Record::from([(k.to_owned(), Field::Str(v.to_owned()))]);
        Writer::new(&mut a)
            .update_record("settings", &rec("theme", "dark"))
            .expect("write");
        a.commit();
        Writer::new(&mut b)
            .update_record("settings", &rec("voice", "soft"))
            .expect("write");
        b.commit();
        a.merge(&mut b).expect("merge");
        let view = read_view(&a, DocName::Settings.layout());
        assert_eq!(view.record("settings").len(), 2, "{view:?}");
        assert_eq!(declared_name(&a).as_deref(), Some("settings"));
    }

    #[test]
    fn writing_the_same_values_adds_no_change() {
        let mut doc = new_document(&DocName::Settings, &ActorId::random());
        let rec = Record::from([("a".to_owned(), Field::Int(1))]);
        Writer::new(&mut doc)
            .set_record("settings", &rec)
            .expect("w");
        assert!(doc.commit().is_some());
        Writer::new(&mut doc)
            .set_record("settings", &rec)
            .expect("w");
        // Int 1 and F64 1.0 are the same number.
        let float = Record::from([("a".to_owned(), Field::F64(1.0))]);
        Writer::new(&mut doc)
            .update_record("settings", &float)
            .expect("w");
        assert!(doc.commit().is_none(), "nothing to commit");
    }
}
