//! End-to-end encryption: the space secret, what is derived from it (token, keys, document
//! ids), per-document keys and the blob format. See docs/SYNC.md for the byte layouts.
//!
//! Every blob is encrypted with the key of its **document** and key epoch, derived from the
//! epoch's encryption key: holding the key of one document (a [`DocKeys`], what sharing one
//! companion hands out) opens that document's blobs and nothing else of the space.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use nexus_sync_protocol::{Blob, BlobKind, DocId, SpaceId, Token};
use sha2::Sha256;

/// Version byte of the blob format.
pub const BLOB_VERSION: u8 = 1;
/// Bytes before the ciphertext: version, key epoch (u32, big-endian), nonce.
pub const BLOB_HEADER_LEN: usize = 1 + 4 + 24;
/// Bytes of the Poly1305 tag at the end of the ciphertext.
pub const TAG_LEN: usize = 16;

/// Why a blob could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Shorter than a header and a tag.
    #[error("the encrypted blob is truncated ({0} bytes)")]
    Truncated(usize),
    /// Another format version.
    #[error("the encrypted blob has format version {0}, this build reads version 1")]
    UnsupportedVersion(u8),
    /// Encrypted under a key epoch this device does not have.
    #[error(
        "the encrypted blob uses key epoch {0}, which this device does not have (pair it again)"
    )]
    UnknownEpoch(u32),
    /// The tag did not verify.
    #[error(
        "the encrypted blob was rejected: wrong key, or it was tampered with or belongs to another document"
    )]
    Rejected,
    /// The platform has no randomness.
    #[error("no secure randomness available: {0}")]
    Random(String),
    /// A [`DocKeys`] was asked to encrypt for another document than its own.
    #[error("these keys are for one shared document only, not for document {0}")]
    ForeignDocument(DocId),
}

/// Fills `bytes` from the operating system's (or browser's) secure random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(bytes)
}

/// The 32-byte secret shared by the devices of one space. Everything else is derived from it.
/// `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct SpaceSecret([u8; 32]);

impl SpaceSecret {
    /// A new random secret (on the first device of a space).
    pub fn generate() -> Result<Self, CryptoError> {
        random_bytes().map(Self)
    }

    /// From its bytes (a pairing code).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its bytes (for a pairing code or the device's storage).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SpaceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpaceSecret(<redacted>)")
    }
}

/// The keys of one space: derived from the [`SpaceSecret`] with HKDF-SHA256.
///
/// * the space [`Token`] (per key epoch: rotating the key also rotates the token),
/// * the encryption key (per key epoch),
/// * the document-id key (not per epoch: document ids stay stable across rotations).
///
/// Keys of earlier epochs can be kept ([`SpaceKeys::keep_epoch`]) to read old blobs.
#[derive(Clone)]
pub struct SpaceKeys {
    space: SpaceId,
    epoch: u32,
    token: Token,
    doc_key: [u8; 32],
    keys: BTreeMap<u32, [u8; 32]>,
}

impl fmt::Debug for SpaceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpaceKeys")
            .field("space", &self.space)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// HKDF-SHA256 with the salt `nexus-sync v1`: 32 bytes for `info` from `ikm`.
fn hkdf(ikm: &[u8; 32], info: &[&[u8]]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"nexus-sync v1"), ikm);
    let mut out = [0; 32];
    hk.expand_multi_info(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

fn expand(secret: &SpaceSecret, info: &[&[u8]]) -> [u8; 32] {
    hkdf(secret.expose(), info)
}

/// The key of document `doc` under an epoch's encryption key: HKDF-SHA256 with info
/// `nexus-sync/doc-key/` + the document id (32 hex digits).
fn document_key(epoch_key: &[u8; 32], doc: &DocId) -> [u8; 32] {
    hkdf(
        epoch_key,
        &[b"nexus-sync/doc-key/", doc.as_str().as_bytes()],
    )
}

/// Names documents: the opaque id of the document called `name`.
pub trait DocIds {
    /// The id of the document named `name`.
    fn doc_id(&self, name: &str) -> DocId;
}

fn blob_aad(space: &SpaceId, version: u8, epoch: u32, doc: &DocId, kind: BlobKind) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96);
    aad.extend_from_slice(b"nexus-sync blob");
    aad.push(version);
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad.extend_from_slice(space.as_str().as_bytes());
    aad.extend_from_slice(doc.as_str().as_bytes());
    aad.push(match kind {
        BlobKind::Change => b'c',
        BlobKind::Snapshot => b's',
    });
    aad
}

/// Encrypts a blob of `doc` with its document key `key` (of `epoch`).
fn seal_blob(
    key: &[u8; 32],
    space: &SpaceId,
    epoch: u32,
    doc: &DocId,
    kind: BlobKind,
    plaintext: &[u8],
    nonce: [u8; 24],
) -> Blob {
    let cipher = XChaCha20Poly1305::new(key.into());
    let aad = blob_aad(space, BLOB_VERSION, epoch, doc, kind);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut blob = Vec::with_capacity(BLOB_HEADER_LEN + ciphertext.len());
    blob.push(BLOB_VERSION);
    blob.extend_from_slice(&epoch.to_be_bytes());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    Blob(blob)
}

/// Decrypts a blob of `doc` with the document key `key_of` gives for its epoch.
fn open_blob(
    space: &SpaceId,
    doc: &DocId,
    kind: BlobKind,
    blob: &Blob,
    key_of: impl FnOnce(u32) -> Option<[u8; 32]>,
) -> Result<Vec<u8>, CryptoError> {
    let bytes = &blob.0;
    if bytes.len() < BLOB_HEADER_LEN + TAG_LEN {
        return Err(CryptoError::Truncated(bytes.len()));
    }
    let version = bytes[0];
    if version != BLOB_VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    let epoch = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let key = key_of(epoch).ok_or(CryptoError::UnknownEpoch(epoch))?;
    let cipher = XChaCha20Poly1305::new((&key).into());
    let aad = blob_aad(space, version, epoch, doc, kind);
    cipher
        .decrypt(
            XNonce::from_slice(&bytes[5..BLOB_HEADER_LEN]),
            Payload {
                msg: &bytes[BLOB_HEADER_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Rejected)
}

impl SpaceKeys {
    /// Derives the keys of `space` at key `epoch` from its secret.
    pub fn derive(space: &SpaceId, secret: &SpaceSecret, epoch: u32) -> Self {
        let space_b = space.as_str().as_bytes();
        let epoch_b = epoch.to_be_bytes();
        let token = Token::from_bytes(expand(
            secret,
            &[b"nexus-sync/space-token/", space_b, b"/", &epoch_b],
        ));
        let key = expand(
            secret,
            &[b"nexus-sync/encryption-key/", space_b, b"/", &epoch_b],
        );
        let doc_key = expand(secret, &[b"nexus-sync/doc-id-key/", space_b]);
        Self {
            space: space.clone(),
            epoch,
            token,
            doc_key,
            keys: BTreeMap::from([(epoch, key)]),
        }
    }

    /// Keeps the encryption key of an older epoch (derived from its secret) for reading blobs
    /// written before a rotation. New blobs always use the current epoch.
    pub fn keep_epoch(&mut self, secret: &SpaceSecret, epoch: u32) {
        let older = Self::derive(&self.space, secret, epoch);
        self.keys.extend(older.keys);
    }

    /// Moves to key `epoch` whose own secret is `secret` (a key rotation, see
    /// [`crate::device`]): a new token and encryption key; document ids stay (they come from
    /// the space secret); older epochs' keys are kept for reading.
    pub fn rotate(&mut self, secret: &SpaceSecret, epoch: u32) {
        let next = Self::derive(&self.space, secret, epoch);
        self.keys.extend(next.keys);
        self.token = next.token;
        self.epoch = epoch;
    }

    /// Key epochs this device can read.
    pub fn epochs(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// The space.
    pub fn space(&self) -> &SpaceId {
        &self.space
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The space token (bearer for the server, which stores only its hash).
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The opaque id of the document named `name`: HMAC-SHA256 under the document-id key,
    /// first 16 bytes. The server cannot tell which document it is.
    pub fn doc_id(&self, name: &str) -> DocId {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.doc_key).expect("HMAC takes any key");
        mac.update(name.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        DocId::from_bytes(id)
    }

    /// The keys of document `name` alone, at the current epoch: what sharing that document
    /// hands out. They open its blobs (of this epoch) and no other document's.
    pub fn doc_keys(&self, name: &str) -> DocKeys {
        let doc = self.doc_id(name);
        let key = document_key(&self.keys[&self.epoch], &doc);
        DocKeys::new(self.space.clone(), doc, name, self.epoch, key)
    }

    /// Encrypts `plaintext` for document `doc` as a blob of `kind` under the current epoch,
    /// with a random 24-byte nonce.
    pub fn seal(&self, doc: &DocId, kind: BlobKind, plaintext: &[u8]) -> Result<Blob, CryptoError> {
        let nonce: [u8; 24] = random_bytes()?;
        Ok(self.seal_with_nonce(doc, kind, plaintext, nonce))
    }

    /// [`SpaceKeys::seal`] with a given nonce (tests; a nonce must never repeat under a key).
    pub fn seal_with_nonce(
        &self,
        doc: &DocId,
        kind: BlobKind,
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Blob {
        let key = document_key(&self.keys[&self.epoch], doc);
        seal_blob(&key, &self.space, self.epoch, doc, kind, plaintext, nonce)
    }

    /// Decrypts a blob that claims to be a `kind` of document `doc`. Fails with a
    /// [`CryptoError`] for a wrong key, another document or kind, or any tampering.
    pub fn open(&self, doc: &DocId, kind: BlobKind, blob: &Blob) -> Result<Vec<u8>, CryptoError> {
        open_blob(&self.space, doc, kind, blob, |epoch| {
            self.keys.get(&epoch).map(|k| document_key(k, doc))
        })
    }
}

impl DocIds for SpaceKeys {
    fn doc_id(&self, name: &str) -> DocId {
        SpaceKeys::doc_id(self, name)
    }
}

/// The keys of one document of a space (for example a companion shared with another person):
/// its name and id, and its document key per key epoch. It seals and opens exactly like
/// [`SpaceKeys`] for that document, and nothing else: it cannot derive any other document's
/// key, nor the space token, nor other documents' ids. `Debug` hides the keys.
#[derive(Clone)]
pub struct DocKeys {
    space: SpaceId,
    doc: DocId,
    name: String,
    epoch: u32,
    keys: BTreeMap<u32, [u8; 32]>,
}

impl fmt::Debug for DocKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocKeys")
            .field("space", &self.space)
            .field("doc", &self.doc)
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl DocKeys {
    /// The keys of document `doc` (named `name`) of `space`, with its key of `epoch`.
    pub fn new(space: SpaceId, doc: DocId, name: &str, epoch: u32, key: [u8; 32]) -> Self {
        Self {
            space,
            doc,
            name: name.to_owned(),
            epoch,
            keys: BTreeMap::from([(epoch, key)]),
        }
    }

    /// Adds the document's key of another epoch; a newer epoch becomes the current one.
    pub fn add_epoch(&mut self, epoch: u32, key: [u8; 32]) {
        self.keys.insert(epoch, key);
        self.epoch = self.epoch.max(epoch);
    }

    /// The space.
    pub fn space(&self) -> &SpaceId {
        &self.space
    }

    /// The document's id.
    pub fn doc(&self) -> &DocId {
        &self.doc
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current key epoch (new blobs use it).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The document key of `epoch`, if known (for a share code or the device's storage).
    pub fn key(&self, epoch: u32) -> Option<&[u8; 32]> {
        self.keys.get(&epoch)
    }

    /// Key epochs these keys can read.
    pub fn epochs(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Encrypts `plaintext` as a blob of `kind` of the document (the only one these keys may
    /// write), under the current epoch.
    pub fn seal(&self, doc: &DocId, kind: BlobKind, plaintext: &[u8]) -> Result<Blob, CryptoError> {
        let nonce: [u8; 24] = random_bytes()?;
        self.seal_with_nonce(doc, kind, plaintext, nonce)
    }

    /// [`DocKeys::seal`] with a given nonce (tests; a nonce must never repeat under a key).
    pub fn seal_with_nonce(
        &self,
        doc: &DocId,
        kind: BlobKind,
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Result<Blob, CryptoError> {
        if *doc != self.doc {
            return Err(CryptoError::ForeignDocument(doc.clone()));
        }
        let key = &self.keys[&self.epoch];
        Ok(seal_blob(
            key,
            &self.space,
            self.epoch,
            doc,
            kind,
            plaintext,
            nonce,
        ))
    }

    /// Decrypts a blob that claims to be a `kind` of document `doc`, like [`SpaceKeys::open`].
    /// A blob of any other document fails ([`CryptoError::Rejected`]): its key is not this one.
    pub fn open(&self, doc: &DocId, kind: BlobKind, blob: &Blob) -> Result<Vec<u8>, CryptoError> {
        open_blob(&self.space, doc, kind, blob, |epoch| {
            self.keys.get(&epoch).copied()
        })
    }
}

impl DocIds for DocKeys {
    /// The shared document's id for its name; any other name gets an id no document of the
    /// space has (so nothing else can pass for the shared document).
    fn doc_id(&self, name: &str) -> DocId {
        if name == self.name {
            return self.doc.clone();
        }
        use sha2::Digest as _;
        let digest = Sha256::new()
            .chain_update(b"nexus-sync/not-shared/")
            .chain_update(name.as_bytes())
            .finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        DocId::from_bytes(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SpaceId {
        SpaceId::from_bytes([1; 16])
    }

    fn keys(secret: u8) -> SpaceKeys {
        SpaceKeys::derive(&space(), &SpaceSecret::from_bytes([secret; 32]), 0)
    }

    #[test]
    fn derivation_is_deterministic_and_separates_purposes() {
        let a = keys(7);
        let b = keys(7);
        assert_eq!(a.token(), b.token());
        assert_eq!(a.doc_id("settings"), b.doc_id("settings"));
        assert_ne!(a.doc_id("settings"), a.doc_id("journal"));
        assert_ne!(a.token(), keys(8).token());
        assert_ne!(a.doc_id("settings"), keys(8).doc_id("settings"));
        // Another epoch: new token and key, same document ids.
        let rotated = SpaceKeys::derive(&space(), &SpaceSecret::from_bytes([7; 32]), 1);
        assert_ne!(rotated.token(), a.token());
        assert_eq!(rotated.doc_id("settings"), a.doc_id("settings"));
        // Another space, same secret: everything differs.
        let other = SpaceKeys::derive(
            &SpaceId::from_bytes([2; 16]),
            &SpaceSecret::from_bytes([7; 32]),
            0,
        );
        assert_ne!(other.token(), a.token());
        assert_ne!(other.doc_id("settings"), a.doc_id("settings"));
        assert_eq!(
            format!("{:?}", SpaceSecret::from_bytes([7; 32])),
            "SpaceSecret(<redacted>)"
        );
    }

    #[test]
    fn a_rotation_with_a_new_secret_locks_out_the_old_one() {
        let mut k = keys(7);
        let doc = k.doc_id("settings");
        let old_blob = k.seal(&doc, BlobKind::Change, b"before").expect("seal");
        k.rotate(&SpaceSecret::from_bytes([42; 32]), 1);
        assert_eq!(k.epoch(), 1);
        assert_eq!(k.doc_id("settings"), doc, "ids stay");
        assert_ne!(k.token(), keys(7).token());
        // Someone who knows only the space secret derives epoch 1 from it: wrong token, wrong key.
        let outsider = SpaceKeys::derive(&space(), &SpaceSecret::from_bytes([7; 32]), 1);
        assert_ne!(outsider.token(), k.token());
        let new_blob = k.seal(&doc, BlobKind::Change, b"after").expect("seal");
        assert_eq!(new_blob.0[1..5], [0, 0, 0, 1]);
        assert_eq!(
            outsider.open(&doc, BlobKind::Change, &new_blob),
            Err(CryptoError::Rejected)
        );
        assert_eq!(
            keys(7).open(&doc, BlobKind::Change, &new_blob),
            Err(CryptoError::UnknownEpoch(1))
        );
        // The rotated keys still read the old epoch.
        assert_eq!(
            k.open(&doc, BlobKind::Change, &old_blob).expect("old"),
            b"before"
        );
        assert_eq!(k.epochs().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn blobs_round_trip_and_have_the_documented_layout() {
        let k = keys(7);
        let doc = k.doc_id("settings");
        let blob = k.seal(&doc, BlobKind::Change, b"hello").expect("seal");
        assert_eq!(blob.0.len(), BLOB_HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(blob.0[0], BLOB_VERSION);
        assert_eq!(&blob.0[1..5], &[0, 0, 0, 0]);
        assert_eq!(
            k.open(&doc, BlobKind::Change, &blob).expect("open"),
            b"hello"
        );
        let again = k.seal(&doc, BlobKind::Change, b"hello").expect("seal");
        assert_ne!(again, blob, "random nonces");
    }

    #[test]
    fn a_wrong_key_reads_nothing() {
        let k = keys(7);
        let doc = k.doc_id("settings");
        let blob = k
            .seal(&doc, BlobKind::Change, b"secret text")
            .expect("seal");
        assert_eq!(
            keys(8).open(&doc, BlobKind::Change, &blob),
            Err(CryptoError::Rejected)
        );
        let rotated = SpaceKeys::derive(&space(), &SpaceSecret::from_bytes([7; 32]), 1);
        assert_eq!(
            rotated.open(&doc, BlobKind::Change, &blob),
            Err(CryptoError::UnknownEpoch(0))
        );
        let mut keeping = rotated.clone();
        keeping.keep_epoch(&SpaceSecret::from_bytes([7; 32]), 0);
        assert_eq!(
            keeping
                .open(&doc, BlobKind::Change, &blob)
                .expect("old epoch"),
            b"secret text"
        );
    }

    #[test]
    fn each_document_has_its_own_key() {
        let k = keys(7);
        let (x, y) = (k.doc_id("companion/x"), k.doc_id("companion/y"));
        let blob_x = k.seal(&x, BlobKind::Change, b"about x").expect("seal");
        let blob_y = k.seal(&y, BlobKind::Change, b"about y").expect("seal");
        // The blob format is unchanged: version, epoch, nonce, then the ciphertext.
        assert_eq!(blob_x.0[0], BLOB_VERSION);
        assert_eq!(blob_x.0.len(), BLOB_HEADER_LEN + 7 + TAG_LEN);
        // The keys differ per document, so a share of X is no share of Y.
        assert_ne!(document_key(&k.keys[&0], &x), document_key(&k.keys[&0], &y));
        assert_eq!(
            k.open(&x, BlobKind::Change, &blob_x).expect("x"),
            b"about x"
        );
        assert_eq!(
            k.open(&y, BlobKind::Change, &blob_y).expect("y"),
            b"about y"
        );
    }

    #[test]
    fn doc_keys_open_their_document_only() {
        let k = keys(7);
        let (x, y) = (k.doc_id("companion/x"), k.doc_id("companion/y"));
        let shared = k.doc_keys("companion/x");
        assert_eq!(shared.doc(), &x);
        assert_eq!(DocIds::doc_id(&shared, "companion/x"), x);
        assert_ne!(DocIds::doc_id(&shared, "companion/y"), y, "no other ids");
        assert!(!format!("{shared:?}").contains("keys"));
        // The recipient reads what the owner writes, and the other way round.
        let change = k.seal(&x, BlobKind::Change, b"owner").expect("seal");
        let snapshot = k.seal(&x, BlobKind::Snapshot, b"whole").expect("seal");
        assert_eq!(
            shared.open(&x, BlobKind::Change, &change).expect("open"),
            b"owner"
        );
        assert_eq!(
            shared
                .open(&x, BlobKind::Snapshot, &snapshot)
                .expect("open"),
            b"whole"
        );
        let back = shared
            .seal(&x, BlobKind::Change, b"recipient")
            .expect("seal");
        assert_eq!(
            k.open(&x, BlobKind::Change, &back).expect("owner opens"),
            b"recipient"
        );
        // Another document's blobs do not open, whatever document they claim to be.
        let other = k.seal(&y, BlobKind::Change, b"private").expect("seal");
        assert_eq!(
            shared.open(&y, BlobKind::Change, &other),
            Err(CryptoError::Rejected)
        );
        assert_eq!(
            shared.open(&x, BlobKind::Change, &other),
            Err(CryptoError::Rejected)
        );
        assert!(matches!(
            shared.seal(&y, BlobKind::Change, b"no"),
            Err(CryptoError::ForeignDocument(_))
        ));
        // After a rotation, new blobs are under an epoch the share does not have.
        let mut rotated = k.clone();
        rotated.rotate(&SpaceSecret::from_bytes([9; 32]), 1);
        let later = rotated.seal(&x, BlobKind::Change, b"later").expect("seal");
        assert_eq!(
            shared.open(&x, BlobKind::Change, &later),
            Err(CryptoError::UnknownEpoch(1))
        );
        let mut renewed = shared.clone();
        let next = rotated.doc_keys("companion/x");
        renewed.add_epoch(1, *next.key(1).expect("key"));
        assert_eq!(renewed.epoch(), 1);
        assert_eq!(
            renewed.open(&x, BlobKind::Change, &later).expect("open"),
            b"later"
        );
        assert_eq!(renewed.epochs().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn tampering_with_ciphertext_header_or_context_is_rejected() {
        let k = keys(7);
        let doc = k.doc_id("settings");
        let other_doc = k.doc_id("journal");
        let blob = k
            .seal(&doc, BlobKind::Change, b"secret text")
            .expect("seal");
        for i in 0..blob.0.len() {
            let mut bad = blob.clone();
            bad.0[i] ^= 0x01;
            let err = k.open(&doc, BlobKind::Change, &bad).expect_err("tampered");
            assert!(
                matches!(
                    err,
                    CryptoError::Rejected
                        | CryptoError::UnsupportedVersion(_)
                        | CryptoError::UnknownEpoch(_)
                ),
                "byte {i}: {err}"
            );
        }
        // Swapped between documents or kinds (the AAD binds space, document and kind).
        assert_eq!(
            k.open(&other_doc, BlobKind::Change, &blob),
            Err(CryptoError::Rejected)
        );
        assert_eq!(
            k.open(&doc, BlobKind::Snapshot, &blob),
            Err(CryptoError::Rejected)
        );
        let other_space = SpaceKeys::derive(
            &SpaceId::from_bytes([9; 16]),
            &SpaceSecret::from_bytes([7; 32]),
            0,
        );
        assert_eq!(
            other_space.open(&doc, BlobKind::Change, &blob),
            Err(CryptoError::Rejected)
        );
        let truncated = Blob(blob.0[..BLOB_HEADER_LEN + 3].to_vec());
        assert_eq!(
            k.open(&doc, BlobKind::Change, &truncated),
            Err(CryptoError::Truncated(BLOB_HEADER_LEN + 3))
        );
        let err = k
            .open(&other_doc, BlobKind::Change, &blob)
            .expect_err("rejected");
        assert!(err.to_string().contains("tampered"), "{err}");
    }
}
