//! Fixture: a kv build that claims interface 2.1.1 (a patch over 2.1.0) but adds `clear`: a
//! patch may change no method, so the host must refuse it, naming `clear`.

/// The kv interface as this build declares it.
#[graft::interface(name = "kv", version = "2.1.1")]
pub trait Kv {
    /// The value of `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key`.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`.
    fn delete(&self, key: &str) -> bool;
    /// Every key.
    fn keys(&self) -> Vec<String>;
    /// Removes every key.
    fn clear(&self);
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
    fn keys(&self) -> Vec<String> {
        self.all_keys()
    }
    fn clear(&self) {
        self.clear_all()
    }
}

graft::export_service!(Store, name: "kv", version: "2.1.1", interface: Kv, stateful);
