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
