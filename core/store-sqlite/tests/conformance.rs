//! The conformance suite on [`SqliteStore`], in a real file and in memory.

use nexus_store_sqlite::SqliteStore;

mod file {
    use super::SqliteStore;

    nexus_store::conformance_tests!(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("nexus.db")).expect("open store file");
        (store, dir) // the directory is deleted after the store is closed
    });
}

mod in_memory {
    use super::SqliteStore;

    nexus_store::conformance_tests!(|| SqliteStore::open_in_memory().expect("open store"));
}
