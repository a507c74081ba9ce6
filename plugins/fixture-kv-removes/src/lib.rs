//! Fixture: a kv build that claims interface 2.2.0 (a minor bump over 2.1.0) but removed
//! `delete`: a version number that lies, which the host must refuse.

/// The kv interface as this build declares it.
#[graft::interface(name = "kv", version = "2.2.0")]
pub trait Kv {
    /// The value of `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key`.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Every key.
    fn keys(&self) -> Vec<String>;
}

include!("../../shared/typed_kv.rs");

impl Kv for Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.get_value(key)
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.put_value(key, value)
    }
    fn keys(&self) -> Vec<String> {
        self.all_keys()
    }
}

graft::export_service!(Store, name: "kv", version: "2.2.0", interface: Kv, stateful);
