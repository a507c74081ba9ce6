// The key-value service, shared by its builds. Each build's `lib.rs` sets:
// - `VERSION`: the plugin version;
// - `INTERFACE`: the interface version it implements (1.1.0 adds the `writes` method);
// - `FORMAT`: the state format it exports (1: the entries; 2: the entries and their write
//   counts). Format 2 builds also have the `writes` method.
//
// Methods (keys are non-empty UTF-8 without a 0 byte; values are any bytes):
// - `put`: input the key, a 0 byte, then the value; answers nothing;
// - `get`: input the key; answers its value, and refuses a key it does not hold;
// - `delete`: input the key; answers `1` if it was there, `0` if not;
// - `len`: answers the number of keys, in decimal;
// - `writes` (format 2 builds): input the key; answers how many times it was put, in decimal;
// - `version`: answers the plugin version.
// Malformed input is refused (`Error::invalid_input`), never a panic.
//
// State formats (integers little-endian):
// - 1: the entry count (u32), then every entry in key order, each the key's length (u32), the
//   key, the value's length (u32) and the value. Nothing follows.
// - 2: format 1, then one write count (u64, at least 1) per entry, in the same order.
// Every build reads both formats, whatever it exports, so that a rollback from a format 2 build
// to a format 1 build keeps the entries (that build drops the counts when it exports); format
// 1 migrated to format 2 counts every entry as written once. Any other format is refused, and
// the host then refuses the swap or rollback and keeps the build serving with its state.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use graft_plugin_api::{Error, Host, Output, Service, Stateful};

/// The key-value store.
#[derive(Debug, Default)]
pub struct Kv {
    entries: RwLock<BTreeMap<String, Entry>>,
}

/// One key's value and how many times it was put.
#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    writes: u64,
}

/// Whether this build has the `writes` method: the builds whose state carries the counts.
const WRITES: bool = FORMAT >= 2;

/// The longest key or value, and the most keys, a state can describe (its lengths are u32).
const MAX_LEN: usize = u32::MAX as usize;

impl Kv {
    // A writer that panicked left the map whole (every change is one `insert` or `remove`), so
    // a poisoned lock is taken over rather than failing every later call.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, input: &[u8]) -> Result<(), Error> {
        let Some(zero) = input.iter().position(|&b| b == 0) else {
            return Err(Error::invalid_input("`put` takes the key, a 0 byte, then the value"));
        };
        let key = key(&input[..zero])?;
        let value = &input[zero + 1..];
        if key.len() > MAX_LEN || value.len() > MAX_LEN {
            return Err(Error::invalid_input(format_args!(
                "a key or a value is longer than {MAX_LEN} bytes"
            )));
        }
        let mut entries = self.write();
        let full = entries.len() >= MAX_LEN;
        match entries.get_mut(key) {
            Some(entry) => {
                entry.value = value.to_vec();
                entry.writes = entry.writes.saturating_add(1);
            }
            None if full => {
                return Err(Error::refused(format_args!("the store is full ({MAX_LEN} keys)")));
            }
            None => {
                entries.insert(key.to_owned(), Entry { value: value.to_vec(), writes: 1 });
            }
        }
        Ok(())
    }
}

impl Service for Kv {
    fn create(_host: Host) -> Result<Self, Error> {
        Ok(Kv::default())
    }

    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        match method {
            "put" => self.put(input)?,
            "get" => {
                let key = key(input)?;
                let entries = self.read();
                let entry = entries.get(key).ok_or_else(|| absent(key))?;
                output.write(&entry.value)?;
            }
            "delete" => {
                let key = key(input)?;
                let removed = self.write().remove(key).is_some();
                output.write(if removed { b"1" } else { b"0" })?;
            }
            "len" => write!(output, "{}", self.read().len())?,
            "writes" if WRITES => {
                let key = key(input)?;
                let writes = self.read().get(key).ok_or_else(|| absent(key))?.writes;
                write!(output, "{writes}")?;
            }
            "version" => output.write(VERSION.as_bytes())?,
            _ => return Err(Error::unknown_method(method)),
        }
        Ok(())
    }
}

impl Stateful for Kv {
    const STATE_FORMAT: u32 = FORMAT;

    fn export_state(&self, state: &mut Output<'_>) -> Result<(), Error> {
        state.write(&encode(&self.read(), FORMAT)?)?;
        Ok(())
    }

    fn from_state(_host: Host, format: u32, state: &[u8]) -> Result<Self, Error> {
        Ok(Kv { entries: RwLock::new(decode(format, state)?) })
    }
}

/// The key in `bytes`, or the refusal of a malformed one.
fn key(bytes: &[u8]) -> Result<&str, Error> {
    check_key(bytes).map_err(Error::invalid_input)
}

fn check_key(bytes: &[u8]) -> Result<&str, String> {
    if bytes.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if bytes.contains(&0) {
        return Err("the key holds a 0 byte".to_owned());
    }
    std::str::from_utf8(bytes).map_err(|e| format!("the key is not UTF-8 ({e})"))
}

fn absent(key: &str) -> Error {
    Error::refused(format_args!("no key `{key}`"))
}

/// `entries` in state format `format` (1 or 2).
fn encode(entries: &BTreeMap<String, Entry>, format: u32) -> Result<Vec<u8>, Error> {
    // `put` keeps every length within a u32; a failure here is a bug, and refuses the handover.
    let length = |len: usize, what: &str| {
        u32::try_from(len).map_err(|_| Error::new(format_args!("{what} does not fit in a u32")))
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&length(entries.len(), "the number of keys")?.to_le_bytes());
    for (key, entry) in entries {
        bytes.extend_from_slice(&length(key.len(), "a key's length")?.to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(&length(entry.value.len(), "a value's length")?.to_le_bytes());
        bytes.extend_from_slice(&entry.value);
    }
    if format >= 2 {
        for entry in entries.values() {
            bytes.extend_from_slice(&entry.writes.to_le_bytes());
        }
    }
    Ok(bytes)
}

/// The entries of `state`, in format `format`; every length is checked against the bytes
/// there are, so a truncated or altered state is refused, never read past its end.
fn decode(format: u32, state: &[u8]) -> Result<BTreeMap<String, Entry>, Error> {
    if !matches!(format, 1 | 2) {
        return Err(Error::unknown_state_format(format, FORMAT));
    }
    let invalid = |why: String| Error::invalid_input(format_args!("state format {format}: {why}"));
    let mut reader = Reader { rest: state };
    let count = reader.u32("the entry count").map_err(&invalid)? as usize;
    // An entry takes at least its two lengths: a larger count is garbage, found before the
    // allocation it asks for.
    if count > state.len() / 8 {
        return Err(invalid(format!("{count} entries cannot fit in {} bytes", state.len())));
    }
    let mut entries: Vec<(String, Vec<u8>)> = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = reader.u32("a key's length").map_err(&invalid)? as usize;
        let key = reader.take(key_len, "a key").map_err(&invalid)?;
        let key = check_key(key).map_err(|why| invalid(format!("entry {i}: {why}")))?;
        if let Some((last, _)) = entries.last()
            && last.as_str() >= key
        {
            return Err(invalid(format!("entry {i}: key `{key}` is out of order or repeated")));
        }
        let value_len = reader.u32("a value's length").map_err(&invalid)? as usize;
        let value = reader.take(value_len, "a value").map_err(&invalid)?;
        entries.push((key.to_owned(), value.to_vec()));
    }
    let mut writes = vec![1; count];
    if format == 2 {
        for (i, (written, (key, _))) in writes.iter_mut().zip(&entries).enumerate() {
            *written = reader.u64("a write count").map_err(&invalid)?;
            if *written == 0 {
                return Err(invalid(format!("entry {i}: key `{key}` was never written")));
            }
        }
    }
    if !reader.rest.is_empty() {
        return Err(invalid(format!("{} bytes after its last field", reader.rest.len())));
    }
    Ok(entries
        .into_iter()
        .zip(writes)
        .map(|((key, value), writes)| (key, Entry { value, writes }))
        .collect())
}

/// The bytes of a state not read yet.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        if self.rest.len() < len {
            return Err(format!("it ends inside {what} ({len} bytes, {} left)", self.rest.len()));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(bytes))
    }
}
