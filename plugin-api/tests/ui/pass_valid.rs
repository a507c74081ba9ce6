//! An interface using every kind of parameter and answer the macro supports compiles, and
//! describes its methods with their normalised signatures.

use graft_plugin_api::typed::{Interface, method_id};

/// An owned type with serde's traits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub tags: Vec<String>,
}

/// The store's refusal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    Full,
    KeyTooLong(usize),
}

#[graft_plugin_api::interface(name = "store", version = "1.2.0")]
pub trait Store {
    /// A borrowed string in, an optional byte vector out.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// A borrowed byte slice in, a `Result` out.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// An owned byte vector in.
    fn put_owned(&self, key: String, value: Vec<u8>) -> Result<u64, StoreError>;
    /// An owned serde struct in and out.
    fn insert(&self, entry: Entry) -> Result<Option<Entry>, StoreError>;
    /// A struct by reference, an `Option` in.
    fn matches(&self, entry: &Entry, tag: Option<String>) -> bool;
    /// No arguments and no answer.
    fn clear(&self);
}

struct Memory;

impl Store for Memory {
    fn get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    fn put(&self, _key: &str, _value: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::Full)
    }
    fn put_owned(&self, key: String, _value: Vec<u8>) -> Result<u64, StoreError> {
        Err(StoreError::KeyTooLong(key.len()))
    }
    fn insert(&self, entry: Entry) -> Result<Option<Entry>, StoreError> {
        Ok(Some(entry))
    }
    fn matches(&self, entry: &Entry, tag: Option<String>) -> bool {
        tag.is_none_or(|tag| entry.tags.contains(&tag))
    }
    fn clear(&self) {}
}

fn main() {
    let methods = <dyn Store as Interface>::METHODS;
    assert_eq!(<dyn Store as Interface>::NAME, "store");
    assert_eq!(<dyn Store as Interface>::VERSION, "1.2.0");
    assert_eq!(methods.len(), 6);
    // SAFETY: the specs of an `Interface` point at `'static` string literals.
    let signatures: Vec<&[u8]> =
        methods.iter().map(|m| unsafe { m.signature.as_bytes() }).collect();
    assert_eq!(
        signatures,
        [
            &b"fn(&str)->Option<Vec<u8>>"[..],
            b"fn(&str,&[u8])->Result<(),StoreError>",
            b"fn(String,Vec<u8>)->Result<u64,StoreError>",
            b"fn(Entry)->Result<Option<Entry>,StoreError>",
            b"fn(&Entry,Option<String>)->bool",
            b"fn()->()",
        ]
    );
    assert!(method_id(methods, "clear").is_some());
    assert!(method_id(methods, "missing").is_none());

    let store = Memory;
    assert_eq!(store.get("k"), None);
    assert_eq!(store.put("k", b"v"), Err(StoreError::Full));
    assert_eq!(store.put_owned("key".into(), vec![1]), Err(StoreError::KeyTooLong(3)));
    let entry = Entry { key: "k".into(), value: vec![1, 2], tags: vec!["a".into()] };
    assert_eq!(store.insert(entry.clone()), Ok(Some(entry.clone())));
    assert!(store.matches(&entry, Some("a".into())));
    store.clear();
    let _client: fn(graft_plugin_api::Remote) -> StoreClient<graft_plugin_api::Remote> =
        StoreClient::new;
}
