//! The typed key-value service 2.1.0, built against the kv interface crate (2.1.0).

use graft_kv_interface::Kv;

include!("../../shared/typed_kv.rs");

impl Kv for Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.get_value(key)
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.put_value(key, value)
    }
    fn delete(&self, key: &str) -> bool {
        self.delete_key(key)
    }
    fn keys(&self) -> Vec<String> {
        self.all_keys()
    }
}

graft::export_service!(Store, name: "kv", version: "2.1.0", interface: Kv, stateful);
