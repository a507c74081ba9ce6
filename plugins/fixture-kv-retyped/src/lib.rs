//! Fixture: a kv build that claims interface 2.2.0 (a minor bump over 2.1.0) but changed the
//! type of `put`'s value from `&[u8]` to `&str`: the host must refuse it, naming `put`.

/// The kv interface as this build declares it.
#[graft::interface(name = "kv", version = "2.2.0")]
pub trait Kv {
    /// The value of `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key`.
    fn put(&self, key: &str, value: &str) -> Result<(), KvError>;
    /// Removes `key`.
    fn delete(&self, key: &str) -> bool;
    /// Every key.
    fn keys(&self) -> Vec<String>;
}

include!("../../shared/typed_kv.rs");

impl Kv for Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.get_value(key)
    }
    fn put(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.put_value(key, value.as_bytes())
    }
    fn delete(&self, key: &str) -> bool {
        self.delete_key(key)
    }
    fn keys(&self) -> Vec<String> {
        self.all_keys()
    }
}

graft::export_service!(Store, name: "kv", version: "2.2.1", interface: Kv, stateful);
