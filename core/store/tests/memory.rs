//! The conformance suite on [`MemoryStore`].

use nexus_store::MemoryStore;

nexus_store::conformance_tests!(MemoryStore::new);

#[test]
fn memory_store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MemoryStore>();
}
