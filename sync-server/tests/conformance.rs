//! The storage conformance suite against SQLite (a real file) and PostgreSQL (a throwaway
//! cluster; skipped loudly when PostgreSQL is not installed).

mod common;

mod sqlite {
    use nexus_sync_server::SqliteStorage;

    async fn make() -> Option<(SqliteStorage, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStorage::open(dir.path()).expect("open");
        Some((s, dir))
    }

    nexus_sync_server::conformance_tests!(make);

    #[tokio::test]
    async fn reopening_keeps_everything_and_foreign_files_are_refused() {
        use nexus_sync_server::Storage;
        let dir = tempfile::tempdir().expect("tempdir");
        let space = super::common::space(1);
        let doc = super::common::doc(1);
        {
            let s = SqliteStorage::open(dir.path()).expect("open");
            s.create_space(&space, "h").await.expect("create");
            s.append(&space, &doc, b"x").await.expect("append");
        }
        let s = SqliteStorage::open(dir.path()).expect("reopen");
        assert_eq!(s.heads(&space).await.expect("heads")[&doc], 1);
        assert_eq!(s.append(&space, &doc, b"y").await.expect("append"), 2);

        let other = tempfile::tempdir().expect("tempdir");
        let c = rusqlite::Connection::open(other.path().join("sync.db")).expect("sqlite");
        c.execute_batch("CREATE TABLE t (x)").expect("table");
        drop(c);
        let err = SqliteStorage::open(other.path()).expect_err("foreign file");
        assert!(
            err.to_string().contains("not a nexus-sync-server database"),
            "{err}"
        );
    }

    /// Pseudo-random, incompressible bytes (xorshift), unique per seed.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// How many 32-byte pieces of `blob` (one every 997 bytes) appear in the database's files.
    fn pieces_on_disk(dir: &std::path::Path, blob: &[u8]) -> usize {
        let files: Vec<Vec<u8>> = ["sync.db", "sync.db-wal"]
            .iter()
            .filter_map(|f| std::fs::read(dir.join(f)).ok())
            .collect();
        (0..blob.len() - 32)
            .step_by(997)
            .filter(|&i| {
                let piece = &blob[i..i + 32];
                files.iter().any(|f| f.windows(32).any(|w| w == piece))
            })
            .count()
    }

    /// A deleted document's blobs are gone from the files (main file and log), not only from
    /// the tables: `secure_delete` zeroes them and the log is truncated after the deletion.
    #[tokio::test]
    async fn deleted_blobs_leave_no_bytes_in_the_files() {
        use nexus_sync_server::Storage;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStorage::open(dir.path()).expect("open");
        let (a, b) = (super::common::space(1), super::common::space(2));
        s.create_space(&a, "h1").await.expect("create");
        s.create_space(&b, "h2").await.expect("create");
        let d = super::common::doc(1);
        // Small (in the page) and large (overflow pages) blobs, a snapshot among them.
        let small = noise(1, 600);
        let large = noise(2, 300_000);
        let snap = noise(3, 50_000);
        let kept = noise(4, 20_000);
        s.append(&a, &d, &small).await.expect("append");
        s.append(&a, &d, &large).await.expect("append");
        s.snapshot(&a, &d, 1, &snap).await.expect("snapshot");
        s.append(&a, &super::common::doc(2), &kept)
            .await
            .expect("append");
        let in_space_b = noise(5, 40_000);
        s.append(&b, &d, &in_space_b).await.expect("append");
        for blob in [&small, &large, &snap] {
            assert!(pieces_on_disk(dir.path(), blob) > 0, "written before");
        }

        assert!(s.delete_doc(&a, &d).await.expect("delete"));
        for blob in [&small, &large, &snap] {
            assert_eq!(
                pieces_on_disk(dir.path(), blob),
                0,
                "a deleted blob is on disk"
            );
        }
        let wal = std::fs::metadata(dir.path().join("sync.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the log was truncated");
        assert!(
            pieces_on_disk(dir.path(), &kept) > 0,
            "other documents stay"
        );

        s.delete_space(&a).await.expect("delete space");
        assert_eq!(
            pieces_on_disk(dir.path(), &kept),
            0,
            "the space's blobs are gone"
        );
        assert!(
            pieces_on_disk(dir.path(), &in_space_b) > 0,
            "other spaces stay"
        );
        drop(s);
        assert_eq!(pieces_on_disk(dir.path(), &kept), 0, "and stay gone");
    }

    /// A database of schema 1 (before deletions) is upgraded in place and keeps its data.
    #[tokio::test]
    async fn a_schema_1_database_is_upgraded() {
        use nexus_sync_server::Storage;
        let dir = tempfile::tempdir().expect("tempdir");
        let c = rusqlite::Connection::open(dir.path().join("sync.db")).expect("sqlite");
        c.execute_batch(
            "CREATE TABLE spaces (space TEXT PRIMARY KEY, token_hash TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE grants (space TEXT NOT NULL, id TEXT NOT NULL,
                 token_hash TEXT NOT NULL, access TEXT NOT NULL, docs TEXT NOT NULL,
                 PRIMARY KEY (space, id)) WITHOUT ROWID;
             CREATE UNIQUE INDEX grants_by_token ON grants (space, token_hash);
             CREATE TABLE docs (space TEXT NOT NULL, doc TEXT NOT NULL, head INTEGER NOT NULL,
                 snap_covers INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (space, doc)) WITHOUT ROWID;
             CREATE TABLE entries (space TEXT NOT NULL, doc TEXT NOT NULL, seq INTEGER NOT NULL,
                 kind INTEGER NOT NULL, covers INTEGER, blob BLOB NOT NULL,
                 PRIMARY KEY (space, doc, seq));
             PRAGMA application_id = 1314411347;
             PRAGMA user_version = 1;",
        )
        .expect("schema 1");
        let (space, doc) = (super::common::space(1), super::common::doc(1));
        c.execute("INSERT INTO spaces VALUES (?1, 'h')", [space.as_str()])
            .expect("space");
        c.execute(
            "INSERT INTO docs (space, doc, head) VALUES (?1, ?2, 1)",
            [space.as_str(), doc.as_str()],
        )
        .expect("doc");
        c.execute(
            "INSERT INTO entries VALUES (?1, ?2, 1, 0, NULL, x'01')",
            [space.as_str(), doc.as_str()],
        )
        .expect("entry");
        drop(c);
        let s = SqliteStorage::open(dir.path()).expect("upgrade");
        assert_eq!(s.heads(&space).await.expect("heads")[&doc], 1);
        assert_eq!(s.append(&space, &doc, b"y").await.expect("append"), 2);
        assert!(s.delete_doc(&space, &doc).await.expect("delete"));
        assert!(s.heads(&space).await.expect("heads").is_empty());
        drop(s);
        SqliteStorage::open(dir.path()).expect("reopen");
    }
}

mod postgres {
    use nexus_sync_server::PgStorage;

    use super::common::PgCluster;

    async fn make() -> Option<(PgStorage, PgCluster)> {
        let cluster = tokio::task::spawn_blocking(PgCluster::start)
            .await
            .expect("join")?;
        let s = PgStorage::connect(&cluster.url(), 4)
            .await
            .expect("connect");
        Some((s, cluster))
    }

    nexus_sync_server::conformance_tests!(make);
}
