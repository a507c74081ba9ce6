//! The interface of the example key-value service: host and plugins both depend on it.

/// Why the store said no.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KvError {
    /// Keys are at most 256 bytes.
    KeyTooLong,
}

/// A key-value store. 2.1 added `keys`.
#[graft::interface(name = "kv", version = "2.1.0")]
pub trait Kv {
    /// The value of `key`, if it has one.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key` to `value`.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`; whether it had a value.
    fn delete(&self, key: &str) -> bool;
    /// Every key, sorted.
    fn keys(&self) -> Vec<String>;
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("keys are at most 256 bytes")
    }
}
