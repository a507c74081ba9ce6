//! The typed key-value service 2.0.0, built against the kv interface as it was at 2.0.0
//! (before `keys`), copied here as that release of the interface crate had it.

/// The kv interface, 2.0.0.
#[graft::interface(name = "kv", version = "2.0.0")]
pub trait Kv {
    /// The value of `key`, if it has one.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key` to `value`.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`; whether it had a value.
    fn delete(&self, key: &str) -> bool;
}

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
}

graft::export_service!(Store, name: "kv", version: "2.0.0", interface: Kv, stateful);
