//! Device identities and key rotation (revoking a device).
//!
//! Every device of a space has a **device id** (16 random bytes, hex) and an X25519 key pair
//! derived from a 32-byte **device seed** that never leaves it. Its public key is listed in the
//! space document (`space`, collection `devices`, end-to-end encrypted like every document), and
//! the server knows it only as a **device grant**: a token of its own that may read the
//! `keyring` document and nothing else.
//!
//! Revoking a device rotates the key: a new random **epoch secret** is sealed to each remaining
//! device's public key with HPKE (RFC 9180, `DHKEM(X25519, HKDF-SHA256)`, HKDF-SHA256,
//! ChaCha20-Poly1305, *auth* mode: the sender's device key authenticates the envelope, so
//! neither the server nor a revoked device can hand out a secret of its own). The envelopes go
//! into the `keyring` document as one [`RotationRecord`]; then the space token is replaced by
//! the one derived from the new secret and every grant but the remaining devices' is deleted.
//! A remaining device finds its old token refused, reads the keyring with its device grant,
//! opens its envelope and carries on in the new epoch. The revoked device has neither a token
//! that works nor the new secret: whatever is written afterwards is unreadable to it even with
//! a copy of the server's database. See docs/SYNC.md ("Devices and key rotation").

use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use nexus_sync_protocol::SpaceId;
use rand_core::{OsRng, TryRngCore};

use crate::crypto::{CryptoError, SpaceSecret, random_bytes};

/// Version byte of a rotation record.
pub const ROTATION_VERSION: u8 = 1;
/// HPKE `info` of the envelopes.
const INFO: &[u8] = b"nexus-sync rotation v1";
/// Bytes of an encapsulated X25519 key.
const ENC_LEN: usize = 32;

type Kem = X25519HkdfSha256;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;

/// A device id: 16 random bytes as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    /// A new random id.
    pub fn generate() -> Result<Self, CryptoError> {
        random_bytes().map(Self)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Reads 32 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A device's key pair (X25519), derived from its 32-byte seed. `Debug` hides the seed.
#[derive(Clone)]
pub struct DeviceKey {
    seed: [u8; 32],
    private: PrivateKey,
    public: PublicKey,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &hex(&self.public()))
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A public key from its 32 bytes; `None` if it is not a valid X25519 key.
fn public_key(bytes: &[u8; 32]) -> Option<PublicKey> {
    PublicKey::from_bytes(bytes).ok()
}

impl DeviceKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, CryptoError> {
        random_bytes().map(Self::from_seed)
    }

    /// The key pair of a seed (deterministic).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let (private, public) = Kem::derive_keypair(&seed);
        Self {
            seed,
            private,
            public,
        }
    }

    /// The seed (for the device's own storage only).
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key's 32 bytes.
    pub fn public(&self) -> [u8; 32] {
        let mut out = [0; 32];
        out.copy_from_slice(&self.public.to_bytes());
        out
    }

    /// Seals `plaintext` to the device with public key `to`, authenticated as this device.
    /// Returns the encapsulated key (32 bytes) followed by the ciphertext and tag.
    pub fn seal_to(
        &self,
        to: &[u8; 32],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let to = public_key(to).ok_or(CryptoError::Rejected)?;
        // Probe the system's randomness first, so a missing source is an error, not a panic.
        random_bytes::<1>()?;
        let mut rng = OsRng.unwrap_err();
        let mode = OpModeS::Auth((self.private.clone(), self.public.clone()));
        let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
            &mode, &to, INFO, plaintext, aad, &mut rng,
        )
        .map_err(|_| CryptoError::Rejected)?;
        let mut out = enc.to_bytes().to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens what the device with public key `from` sealed to this device with
    /// [`DeviceKey::seal_to`]. Fails for another sender, another recipient, other `aad` or
    /// any tampering.
    pub fn open_from(
        &self,
        from: &[u8; 32],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < ENC_LEN + 16 {
            return Err(CryptoError::Truncated(sealed.len()));
        }
        let from = public_key(from).ok_or(CryptoError::Rejected)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed[..ENC_LEN])
            .map_err(|_| CryptoError::Rejected)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Auth(from),
            &self.private,
            &enc,
            INFO,
            &sealed[ENC_LEN..],
            aad,
        )
        .map_err(|_| CryptoError::Rejected)
    }
}

/// One key rotation as stored in the `keyring` document: the new epoch, who made it, and the
/// new epoch secret sealed to each remaining device.
///
/// ```text
/// version (1) | epoch (u32 BE) | sender device id (16) | count (u16 BE)
///   count x [ recipient device id (16) | length (u16 BE) | sealed (enc 32 | ciphertext | tag 16) ]
/// AAD of each envelope = "nexus-sync rotation" | space id (32 hex) | epoch | sender id | recipient id
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    /// The new key epoch.
    pub epoch: u32,
    /// The device that rotated.
    pub sender: DeviceId,
    /// Recipient and its envelope.
    pub envelopes: Vec<(DeviceId, Vec<u8>)>,
}

fn envelope_aad(space: &SpaceId, epoch: u32, sender: &DeviceId, recipient: &DeviceId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(19 + 32 + 4 + 32);
    aad.extend_from_slice(b"nexus-sync rotation");
    aad.extend_from_slice(space.as_str().as_bytes());
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad.extend_from_slice(sender.as_bytes());
    aad.extend_from_slice(recipient.as_bytes());
    aad
}

impl RotationRecord {
    /// Seals `secret` (of `epoch`) from `sender` to every `(device, public key)` recipient.
    pub fn seal(
        space: &SpaceId,
        epoch: u32,
        secret: &SpaceSecret,
        sender: (&DeviceId, &DeviceKey),
        recipients: &[(DeviceId, [u8; 32])],
    ) -> Result<Self, CryptoError> {
        let mut envelopes = Vec::with_capacity(recipients.len());
        for (id, public) in recipients {
            let aad = envelope_aad(space, epoch, sender.0, id);
            envelopes.push((*id, sender.1.seal_to(public, &aad, secret.expose())?));
        }
        Ok(Self {
            epoch,
            sender: *sender.0,
            envelopes,
        })
    }

    /// Opens the envelope for device `me`, checking it comes from the device whose public key
    /// is `sender_public`. `None` if the record has no envelope for `me`.
    pub fn open(
        &self,
        space: &SpaceId,
        me: (&DeviceId, &DeviceKey),
        sender_public: &[u8; 32],
    ) -> Option<Result<SpaceSecret, CryptoError>> {
        let (_, sealed) = self.envelopes.iter().find(|(id, _)| id == me.0)?;
        let aad = envelope_aad(space, self.epoch, &self.sender, me.0);
        Some(
            me.1.open_from(sender_public, &aad, sealed)
                .and_then(|secret| {
                    <[u8; 32]>::try_from(secret.as_slice())
                        .map(SpaceSecret::from_bytes)
                        .map_err(|_| CryptoError::Rejected)
                }),
        )
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ROTATION_VERSION];
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.sender.as_bytes());
        let count = u16::try_from(self.envelopes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (id, sealed) in self.envelopes.iter().take(usize::from(count)) {
            out.extend_from_slice(id.as_bytes());
            let len = u16::try_from(sealed.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&sealed[..usize::from(len)]);
        }
        out
    }

    /// Reads a record; `None` if it is malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = rest;
            Some(head)
        }
        let mut b = bytes;
        if take(&mut b, 1)? != [ROTATION_VERSION] {
            return None;
        }
        let epoch = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
        let sender = DeviceId(take(&mut b, 16)?.try_into().ok()?);
        let count = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let mut envelopes = Vec::with_capacity(usize::from(count).min(1024));
        for _ in 0..count {
            let id = DeviceId(take(&mut b, 16)?.try_into().ok()?);
            let len = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
            envelopes.push((id, take(&mut b, usize::from(len))?.to_vec()));
        }
        b.is_empty().then_some(Self {
            epoch,
            sender,
            envelopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SpaceId {
        SpaceId::from_bytes([4; 16])
    }

    #[test]
    fn device_ids_print_and_parse_as_hex() {
        let id = DeviceId::generate().expect("random");
        assert_eq!(DeviceId::parse(&id.to_string()), Some(id));
        assert_eq!(DeviceId::parse("xyz"), None);
        assert_eq!(DeviceId::parse(&"g".repeat(32)), None);
    }

    #[test]
    fn keys_are_deterministic_from_the_seed_and_debug_hides_it() {
        let a = DeviceKey::from_seed([1; 32]);
        assert_eq!(a.public(), DeviceKey::from_seed([1; 32]).public());
        assert_ne!(a.public(), DeviceKey::from_seed([2; 32]).public());
        assert!(!format!("{a:?}").contains(&hex(&[1; 32])));
    }

    #[test]
    fn a_rotation_opens_only_for_its_recipients_from_its_sender() {
        let (ida, a) = (DeviceId([1; 16]), DeviceKey::generate().expect("key"));
        let (idb, b) = (DeviceId([2; 16]), DeviceKey::generate().expect("key"));
        let (idc, c) = (DeviceId([3; 16]), DeviceKey::generate().expect("key"));
        let secret = SpaceSecret::from_bytes([9; 32]);
        let record = RotationRecord::seal(
            &space(),
            3,
            &secret,
            (&ida, &a),
            &[(ida, a.public()), (idb, b.public())],
        )
        .expect("seal");
        let record = RotationRecord::decode(&record.encode()).expect("round trip");
        assert_eq!(record.epoch, 3);
        let opened = record
            .open(&space(), (&idb, &b), &a.public())
            .expect("an envelope for b")
            .expect("opens");
        assert_eq!(opened, secret);
        assert!(record.open(&space(), (&ida, &a), &a.public()).is_some());
        // The revoked device has no envelope, and cannot use another's.
        assert!(record.open(&space(), (&idc, &c), &a.public()).is_none());
        let mut stolen = record.clone();
        stolen.envelopes[1].0 = idc;
        assert_eq!(
            stolen.open(&space(), (&idc, &c), &a.public()),
            Some(Err(CryptoError::Rejected))
        );
        // A record claiming another sender (say, forged by the revoked device) is refused.
        assert_eq!(
            record.open(&space(), (&idb, &b), &c.public()),
            Some(Err(CryptoError::Rejected))
        );
        // Another space or epoch: refused.
        assert_eq!(
            record.open(&SpaceId::from_bytes([5; 16]), (&idb, &b), &a.public()),
            Some(Err(CryptoError::Rejected))
        );
        let mut other_epoch = record.clone();
        other_epoch.epoch = 4;
        assert_eq!(
            other_epoch.open(&space(), (&idb, &b), &a.public()),
            Some(Err(CryptoError::Rejected))
        );
    }

    #[test]
    fn malformed_records_are_refused_and_tampering_is_caught() {
        let (ida, a) = (DeviceId([1; 16]), DeviceKey::generate().expect("key"));
        let (idb, b) = (DeviceId([2; 16]), DeviceKey::generate().expect("key"));
        let record = RotationRecord::seal(
            &space(),
            1,
            &SpaceSecret::from_bytes([7; 32]),
            (&ida, &a),
            &[(idb, b.public())],
        )
        .expect("seal");
        let bytes = record.encode();
        for cut in 0..bytes.len() {
            assert_eq!(RotationRecord::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RotationRecord::decode(&longer), None);
        assert_eq!(RotationRecord::decode(b""), None);
        // Flip each byte of the envelope: it never opens to a secret.
        let start = bytes.len() - record.envelopes[0].1.len();
        for i in start..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let bad = RotationRecord::decode(&bad).expect("same shape");
            assert!(
                matches!(bad.open(&space(), (&idb, &b), &a.public()), Some(Err(_))),
                "byte {i}"
            );
        }
    }
}
