// The typed key-value store, shared by its builds and fixtures. Each build's `lib.rs` sets
// `VERSION` and implements its interface's trait for `Store` with the methods below. The state
// (every entry) crosses handovers as a serde type: the author writes no encoding.

use std::collections::BTreeMap;
use std::sync::RwLock;

use graft::typed::{StateFormat, TypedState};
use graft::{Error, Host, Service};
use graft_kv_interface::KvError;
use serde_bytes::ByteBuf;

/// The store.
#[derive(Debug, Default)]
pub struct Store {
    entries: RwLock<BTreeMap<String, Vec<u8>>>,
}

/// The store's state: every entry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Entries(BTreeMap<String, ByteBuf>);

impl StateFormat for Entries {
    const FORMAT: u32 = 1;
}

impl Service for Store {
    fn create(_host: Host) -> Result<Self, Error> {
        Ok(Store::default())
    }
}

impl TypedState for Store {
    type State = Entries;

    fn save(&self) -> Result<Entries, Error> {
        let entries = self.entries.read().map_err(|_| Error::new("poisoned"))?;
        Ok(Entries(entries.iter().map(|(k, v)| (k.clone(), ByteBuf::from(v.clone()))).collect()))
    }

    fn restore(_host: Host, state: Entries) -> Result<Self, Error> {
        let entries = state.0.into_iter().map(|(k, v)| (k, v.into_vec())).collect();
        Ok(Store { entries: RwLock::new(entries) })
    }
}

#[allow(dead_code)]
impl Store {
    fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let entries = self.entries.read().map_err(|_| KvError::KeyTooLong)?;
        Ok(entries.get(key).cloned())
    }

    fn put_value(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if key.len() > 256 {
            return Err(KvError::KeyTooLong);
        }
        let mut entries = self.entries.write().map_err(|_| KvError::KeyTooLong)?;
        entries.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete_key(&self, key: &str) -> bool {
        self.entries.write().map(|mut e| e.remove(key).is_some()).unwrap_or(false)
    }

    fn all_keys(&self) -> Vec<String> {
        self.entries.read().map(|e| e.keys().cloned().collect()).unwrap_or_default()
    }

    fn clear_all(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}
