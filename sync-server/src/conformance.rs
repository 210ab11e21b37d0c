//! One test suite for every [`Storage`] implementation, so SQLite and PostgreSQL cannot
//! drift apart. [`conformance_tests!`](crate::conformance_tests) turns it into `#[tokio::test]`
//! functions:
//!
//! ```ignore
//! async fn make() -> Option<(SqliteStorage, tempfile::TempDir)> { .. }
//! nexus_sync_server::conformance_tests!(make);
//! ```
//!
//! `make` is called once per test and returns the storage and a guard that lives until the
//! test ends (a temporary directory, a database cluster), or `None` to skip (PostgreSQL not
//! installed on a developer machine; CI installs it).

use std::collections::BTreeSet;

use nexus_sync_protocol::{Access, BlobKind, DocId, SpaceId};

use crate::storage::{Created, NewGrant, Principal, Storage, StorageError};

/// Expands to one `#[tokio::test]` per function of [`conformance`](crate::conformance).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@tests $make;
            spaces_are_created_once_per_token,
            wrong_tokens_and_unknown_spaces_look_the_same,
            sequence_numbers_are_per_document_and_start_at_one,
            concurrent_appends_get_distinct_gapless_numbers,
            entries_are_paged_by_count_and_bytes,
            snapshots_compact_covered_entries,
            snapshots_are_validated,
            grants_give_listed_documents_only,
            grant_tokens_must_be_unique,
            deleting_a_grant_revokes_it,
            rotating_the_token_revokes_the_old_one,
            rotating_with_kept_grants_deletes_the_others,
            blobs_round_trip_exactly,
            deleting_a_document_removes_it_and_refuses_writes,
            deleting_a_space_removes_everything_in_it,
            health_is_ok,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // `None`: the backend is not available here (the fixture said why, loudly).
                let Some(fixture) = $make().await else { return };
                $crate::conformance::$name(&fixture.0).await;
            }
        )*
    };
}

fn space(n: u8) -> SpaceId {
    SpaceId::from_bytes([n; 16])
}

fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

fn hash(n: u8) -> String {
    format!("{n:064x}")
}

async fn new_space<S: Storage>(s: &S, n: u8) -> SpaceId {
    let sp = space(n);
    assert_eq!(
        s.create_space(&sp, &hash(n)).await.expect("create"),
        Created::Created
    );
    sp
}

async fn all<S: Storage>(s: &S, sp: &SpaceId, d: &DocId, since: u64) -> Vec<(u64, BlobKind)> {
    let page = s
        .entries(sp, d, since, 10_000, usize::MAX)
        .await
        .expect("entries");
    assert!(!page.more);
    page.entries.iter().map(|e| (e.seq, e.kind)).collect()
}

/// Create: 201 once, 200 with the same token, conflict with another.
pub async fn spaces_are_created_once_per_token<S: Storage>(s: &S) {
    let sp = new_space(s, 1).await;
    assert_eq!(
        s.create_space(&sp, &hash(1)).await.expect("again"),
        Created::Existed
    );
    assert!(matches!(
        s.create_space(&sp, &hash(2)).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        s.authenticate(&sp, &hash(1)).await.expect("auth"),
        Some(Principal::Owner)
    );
}

/// No way to tell a wrong token from a missing space.
pub async fn wrong_tokens_and_unknown_spaces_look_the_same<S: Storage>(s: &S) {
    let sp = new_space(s, 1).await;
    assert_eq!(s.authenticate(&sp, &hash(9)).await.expect("auth"), None);
    assert_eq!(
        s.authenticate(&space(7), &hash(1)).await.expect("auth"),
        None
    );
}

/// Per document 1, 2, 3 ...; heads report the highest.
pub async fn sequence_numbers_are_per_document_and_start_at_one<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let b = new_space(s, 2).await;
    for i in 1..=3u64 {
        assert_eq!(s.append(&a, &doc(1), b"x").await.expect("append"), i);
    }
    assert_eq!(s.append(&a, &doc(2), b"y").await.expect("append"), 1);
    assert_eq!(s.append(&b, &doc(1), b"z").await.expect("append"), 1);
    let heads = s.heads(&a).await.expect("heads");
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[&doc(1)], 3);
    assert_eq!(heads[&doc(2)], 1);
    assert_eq!(s.heads(&space(9)).await.expect("heads").len(), 0);
    let e = s
        .entries(&a, &doc(1), 1, 10, usize::MAX)
        .await
        .expect("entries");
    assert_eq!(
        e.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(
        e.entries
            .iter()
            .all(|e| e.kind == BlobKind::Change && e.covers.is_none())
    );
    assert_eq!(e.entries[0].blob.0, b"x");
}

/// Concurrent appends to one document get 1..=N, each once.
pub async fn concurrent_appends_get_distinct_gapless_numbers<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let d = doc(1);
    let futs = (0..40u8).map(|i| {
        let (a, d) = (a.clone(), d.clone());
        async move { s.append(&a, &d, &[i]).await.expect("append") }
    });
    let seqs: BTreeSet<u64> = futures_util::future::join_all(futs)
        .await
        .into_iter()
        .collect();
    assert_eq!(seqs, (1..=40).collect());
    let entries = s
        .entries(&a, &d, 0, 100, usize::MAX)
        .await
        .expect("entries");
    assert_eq!(entries.entries.len(), 40);
    let blobs: BTreeSet<u8> = entries.entries.iter().map(|e| e.blob.0[0]).collect();
    assert_eq!(blobs.len(), 40, "every write stored once");
}

/// `limit` and the byte budget page the log; the first entry always fits.
pub async fn entries_are_paged_by_count_and_bytes<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let d = doc(1);
    for _ in 0..5 {
        s.append(&a, &d, &[0; 100]).await.expect("append");
    }
    let p = s.entries(&a, &d, 0, 2, usize::MAX).await.expect("page");
    assert_eq!(p.entries.len(), 2);
    assert!(p.more);
    let p = s.entries(&a, &d, 4, 2, usize::MAX).await.expect("page");
    assert_eq!(p.entries.len(), 1);
    assert!(!p.more);
    let p = s.entries(&a, &d, 0, 100, 250).await.expect("page");
    assert_eq!(p.entries.len(), 2, "250 bytes hold two 100-byte blobs");
    assert!(p.more);
    let p = s.entries(&a, &d, 0, 100, 10).await.expect("page");
    assert_eq!(p.entries.len(), 1, "the first entry always fits");
    let p = s.entries(&a, &d, 5, 100, 10).await.expect("page");
    assert!(p.entries.is_empty() && !p.more);
    let p = s.entries(&a, &doc(9), 0, 100, 10).await.expect("page");
    assert!(p.entries.is_empty() && !p.more);
}

/// A snapshot gets the next number and drops what it covers and older snapshots; reading
/// from before it returns the snapshot and what it does not cover.
pub async fn snapshots_compact_covered_entries<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let d = doc(1);
    for _ in 0..5 {
        s.append(&a, &d, b"c").await.expect("append");
    }
    assert_eq!(s.snapshot(&a, &d, 3, b"snap3").await.expect("snapshot"), 6);
    use BlobKind::{Change, Snapshot};
    assert_eq!(
        all(s, &a, &d, 0).await,
        vec![(4, Change), (5, Change), (6, Snapshot)]
    );
    assert_eq!(all(s, &a, &d, 4).await, vec![(5, Change), (6, Snapshot)]);
    let page = s.entries(&a, &d, 5, 10, usize::MAX).await.expect("page");
    assert_eq!(page.entries[0].covers, Some(3));
    assert_eq!(page.entries[0].blob.0, b"snap3");
    assert_eq!(s.append(&a, &d, b"c").await.expect("append"), 7);
    assert_eq!(s.snapshot(&a, &d, 7, b"snap7").await.expect("snapshot"), 8);
    assert_eq!(all(s, &a, &d, 0).await, vec![(8, Snapshot)]);
    assert_eq!(all(s, &a, &d, 7).await, vec![(8, Snapshot)]);
    assert_eq!(s.heads(&a).await.expect("heads")[&d], 8);
    assert_eq!(s.append(&a, &d, b"c").await.expect("append"), 9);
    // A snapshot of an empty document covers nothing.
    assert_eq!(s.snapshot(&a, &doc(2), 0, b"s").await.expect("snapshot"), 1);
    // Two devices snapshot at the same cursor: the first snapshot is above what the second
    // covers, so it stays (dropping it would leave a hole that a device reads as lost).
    let d3 = doc(3);
    for _ in 0..3 {
        s.append(&a, &d3, b"c").await.expect("append");
    }
    assert_eq!(s.snapshot(&a, &d3, 3, b"first").await.expect("snapshot"), 4);
    assert_eq!(s.append(&a, &d3, b"c").await.expect("append"), 5);
    assert_eq!(
        s.snapshot(&a, &d3, 3, b"second").await.expect("snapshot"),
        6
    );
    assert_eq!(
        all(s, &a, &d3, 0).await,
        vec![(4, Snapshot), (5, Change), (6, Snapshot)]
    );
    // A later snapshot covering them drops both.
    assert_eq!(s.snapshot(&a, &d3, 6, b"third").await.expect("snapshot"), 7);
    assert_eq!(all(s, &a, &d3, 0).await, vec![(7, Snapshot)]);
}

/// Snapshots beyond the head or older than the stored one are refused and change nothing.
pub async fn snapshots_are_validated<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let d = doc(1);
    for _ in 0..4 {
        s.append(&a, &d, b"c").await.expect("append");
    }
    assert!(matches!(
        s.snapshot(&a, &d, 5, b"s").await,
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        s.snapshot(&a, &doc(2), 1, b"s").await,
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(s.snapshot(&a, &d, 3, b"s").await.expect("snapshot"), 5);
    assert!(matches!(
        s.snapshot(&a, &d, 2, b"s").await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(s.heads(&a).await.expect("heads")[&d], 5);
    assert_eq!(s.append(&a, &d, b"c").await.expect("append"), 6);
}

/// A grant token authenticates as its grant, with its documents and access.
pub async fn grants_give_listed_documents_only<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let grant = NewGrant {
        id: "g1".into(),
        token_hash: hash(50),
        docs: vec![doc(1), doc(2)],
        access: Access::Read,
    };
    s.create_grant(&a, &grant).await.expect("grant");
    let p = s
        .authenticate(&a, &hash(50))
        .await
        .expect("auth")
        .expect("grant");
    let Principal::Grant { id, docs } = &p else {
        panic!("{p:?}")
    };
    assert_eq!(id, "g1");
    assert_eq!(docs.len(), 2);
    assert!(p.can_read(&doc(1)) && p.can_read(&doc(2)) && !p.can_read(&doc(3)));
    assert!(!p.can_write(&doc(1)));
    s.create_grant(
        &a,
        &NewGrant {
            id: "g2".into(),
            token_hash: hash(51),
            docs: vec![doc(3)],
            access: Access::ReadWrite,
        },
    )
    .await
    .expect("grant");
    let p = s
        .authenticate(&a, &hash(51))
        .await
        .expect("auth")
        .expect("grant");
    assert!(p.can_write(&doc(3)) && !p.can_read(&doc(1)));
    // The grant belongs to its space only.
    let b = new_space(s, 2).await;
    assert_eq!(s.authenticate(&b, &hash(50)).await.expect("auth"), None);
    assert!(matches!(
        s.create_grant(&space(9), &grant).await,
        Err(StorageError::NotFound)
    ));
}

/// A grant token may not be the space token or another grant's.
pub async fn grant_tokens_must_be_unique<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let mut g = NewGrant {
        id: "g1".into(),
        token_hash: hash(1),
        docs: vec![doc(1)],
        access: Access::Read,
    };
    assert!(matches!(
        s.create_grant(&a, &g).await,
        Err(StorageError::Conflict(_))
    ));
    g.token_hash = hash(50);
    s.create_grant(&a, &g).await.expect("grant");
    g.id = "g2".into();
    assert!(matches!(
        s.create_grant(&a, &g).await,
        Err(StorageError::Conflict(_))
    ));
}

/// After deleting a grant its token reads nothing.
pub async fn deleting_a_grant_revokes_it<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let g = NewGrant {
        id: "g1".into(),
        token_hash: hash(50),
        docs: vec![doc(1)],
        access: Access::ReadWrite,
    };
    s.create_grant(&a, &g).await.expect("grant");
    s.delete_grant(&a, "g1").await.expect("delete");
    assert_eq!(s.authenticate(&a, &hash(50)).await.expect("auth"), None);
    assert!(matches!(
        s.delete_grant(&a, "g1").await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        s.delete_grant(&space(9), "g1").await,
        Err(StorageError::NotFound)
    ));
}

/// Rotation replaces the space token.
pub async fn rotating_the_token_revokes_the_old_one<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    s.create_grant(
        &a,
        &NewGrant {
            id: "g1".into(),
            token_hash: hash(50),
            docs: vec![doc(1)],
            access: Access::Read,
        },
    )
    .await
    .expect("grant");
    assert!(matches!(
        s.rotate_token(&a, &hash(50), None).await,
        Err(StorageError::Conflict(_))
    ));
    s.rotate_token(&a, &hash(2), None).await.expect("rotate");
    assert_eq!(s.authenticate(&a, &hash(1)).await.expect("auth"), None);
    assert_eq!(
        s.authenticate(&a, &hash(2)).await.expect("auth"),
        Some(Principal::Owner)
    );
    assert!(
        s.authenticate(&a, &hash(50)).await.expect("auth").is_some(),
        "grants survive a rotation"
    );
    assert!(matches!(
        s.rotate_token(&space(9), &hash(3), None).await,
        Err(StorageError::NotFound)
    ));
}

/// Rotation with `keep_grants` deletes every other grant of the space, atomically with the
/// token (revoking a device), and leaves other spaces alone.
pub async fn rotating_with_kept_grants_deletes_the_others<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let b = new_space(s, 2).await;
    for (space, id, token) in [
        (&a, "keep", 50),
        (&a, "drop1", 51),
        (&a, "drop2", 52),
        (&b, "other", 53),
    ] {
        s.create_grant(
            space,
            &NewGrant {
                id: id.into(),
                token_hash: hash(token),
                docs: vec![doc(1)],
                access: Access::Read,
            },
        )
        .await
        .expect("grant");
    }
    s.rotate_token(&a, &hash(3), Some(&["keep".to_owned()]))
        .await
        .expect("rotate");
    assert_eq!(s.authenticate(&a, &hash(1)).await.expect("auth"), None);
    assert!(s.authenticate(&a, &hash(50)).await.expect("auth").is_some());
    assert_eq!(s.authenticate(&a, &hash(51)).await.expect("auth"), None);
    assert_eq!(s.authenticate(&a, &hash(52)).await.expect("auth"), None);
    assert!(s.authenticate(&b, &hash(53)).await.expect("auth").is_some());
    // Keeping none deletes all.
    s.rotate_token(&a, &hash(4), Some(&[]))
        .await
        .expect("rotate");
    assert_eq!(s.authenticate(&a, &hash(50)).await.expect("auth"), None);
}

/// Blobs come back byte for byte, up to the change limit.
pub async fn blobs_round_trip_exactly<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let blob: Vec<u8> = (0..nexus_sync_protocol::MAX_CHANGE_BYTES)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    s.append(&a, &doc(1), &blob).await.expect("append");
    s.append(&a, &doc(1), &[]).await.expect("empty");
    let p = s
        .entries(&a, &doc(1), 0, 10, usize::MAX)
        .await
        .expect("entries");
    assert_eq!(p.entries[0].blob.0, blob);
    assert!(p.entries[1].blob.0.is_empty());
}

/// Deleting a document drops every entry and snapshot, takes it out of the heads and leaves a
/// tombstone: writes to it are `Gone`, deleting again is fine, other documents are untouched.
pub async fn deleting_a_document_removes_it_and_refuses_writes<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let b = new_space(s, 2).await;
    let (d, other) = (doc(1), doc(2));
    for _ in 0..3 {
        s.append(&a, &d, b"secret").await.expect("append");
    }
    s.snapshot(&a, &d, 2, b"snapshot").await.expect("snapshot");
    s.append(&a, &other, b"kept").await.expect("append");
    s.append(&b, &d, b"other space").await.expect("append");

    assert!(
        s.delete_doc(&a, &d).await.expect("delete"),
        "it had entries"
    );
    assert!(all(s, &a, &d, 0).await.is_empty(), "no entry is left");
    let heads = s.heads(&a).await.expect("heads");
    assert_eq!(heads.keys().collect::<Vec<_>>(), vec![&other]);
    assert!(matches!(
        s.append(&a, &d, b"late").await,
        Err(StorageError::Gone)
    ));
    assert!(matches!(
        s.snapshot(&a, &d, 0, b"late").await,
        Err(StorageError::Gone)
    ));
    assert!(all(s, &a, &d, 0).await.is_empty(), "nothing was written");
    assert!(!s.delete_doc(&a, &d).await.expect("again"), "idempotent");
    // An id that never had entries is tombstoned too: a late first write cannot create it.
    assert!(!s.delete_doc(&a, &doc(3)).await.expect("unknown"));
    assert!(matches!(
        s.append(&a, &doc(3), b"x").await,
        Err(StorageError::Gone)
    ));
    assert!(!s.heads(&a).await.expect("heads").contains_key(&doc(3)));
    // Other documents and spaces carry on.
    assert_eq!(s.append(&a, &other, b"more").await.expect("append"), 2);
    assert_eq!(
        all(s, &b, &d, 0).await.len(),
        1,
        "the same id in another space"
    );
    assert_eq!(s.append(&b, &d, b"x").await.expect("append"), 2);
    assert!(matches!(
        s.delete_doc(&space(9), &d).await,
        Err(StorageError::NotFound)
    ));
}

/// Deleting a space deletes its documents, entries, tombstones and grants: its tokens
/// authenticate nothing, and the id can be registered afresh. Other spaces are untouched.
pub async fn deleting_a_space_removes_everything_in_it<S: Storage>(s: &S) {
    let a = new_space(s, 1).await;
    let b = new_space(s, 2).await;
    s.append(&a, &doc(1), b"secret").await.expect("append");
    s.snapshot(&a, &doc(1), 1, b"snapshot").await.expect("snap");
    s.append(&a, &doc(2), b"secret").await.expect("append");
    s.delete_doc(&a, &doc(2)).await.expect("tombstone");
    s.append(&b, &doc(1), b"kept").await.expect("append");
    s.create_grant(
        &a,
        &NewGrant {
            id: "g1".into(),
            token_hash: hash(50),
            docs: vec![doc(1)],
            access: Access::Read,
        },
    )
    .await
    .expect("grant");

    s.delete_space(&a).await.expect("delete space");
    assert_eq!(s.authenticate(&a, &hash(1)).await.expect("auth"), None);
    assert_eq!(s.authenticate(&a, &hash(50)).await.expect("auth"), None);
    assert!(s.heads(&a).await.expect("heads").is_empty());
    assert!(all(s, &a, &doc(1), 0).await.is_empty());
    assert!(matches!(
        s.delete_space(&a).await,
        Err(StorageError::NotFound)
    ));
    assert!(s.append(&a, &doc(3), b"late").await.is_err(), "no space");
    assert!(
        all(s, &a, &doc(3), 0).await.is_empty(),
        "nothing was written"
    );
    assert!(matches!(
        s.delete_doc(&a, &doc(1)).await,
        Err(StorageError::NotFound)
    ));

    assert_eq!(all(s, &b, &doc(1), 0).await.len(), 1, "other spaces stay");
    assert_eq!(
        s.authenticate(&b, &hash(2)).await.expect("auth"),
        Some(Principal::Owner)
    );
    // Registered again (a new device of a new user would pick a new random id; this is the
    // storage's behaviour): nothing of the old space comes back, tombstones included.
    assert_eq!(
        s.create_space(&a, &hash(3)).await.expect("create"),
        Created::Created
    );
    assert!(s.heads(&a).await.expect("heads").is_empty());
    assert_eq!(s.append(&a, &doc(2), b"new").await.expect("append"), 1);
}

/// A working database is healthy.
pub async fn health_is_ok<S: Storage>(s: &S) {
    s.health().await.expect("healthy");
}
