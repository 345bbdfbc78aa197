//! The on-disk layout: one sled tree, and a second one for the snapshot alone. Scalar state lives under fixed keys; the log is stored in
//! chunks, one value per appended batch, keyed by `b'l'` and the chunk's first absolute index in
//! big-endian (so keys sort by index). A chunk value is its entry count (8 bytes, big-endian)
//! followed by the bincode encoding of the entries.

use super::error::PersistentStorageError;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(super) const PROMISE: &[u8] = b"s/promise";
pub(super) const ACCEPTED_ROUND: &[u8] = b"s/accepted_round";
pub(super) const DECIDED_IDX: &[u8] = b"s/decided_idx";
pub(super) const COMPACTED_IDX: &[u8] = b"s/compacted_idx";
/// First absolute index held in the log (everything below was trimmed).
pub(super) const LOG_START: &[u8] = b"s/log_start";
pub(super) const STOPSIGN: &[u8] = b"s/stopsign";
pub(super) const SNAPSHOT: &[u8] = b"s/snapshot";
/// Log cycles below this one are all in sled's durable state (`wal.rs`).
pub(super) const WAL_CYCLE: &[u8] = b"s/wal_cycle";
/// The tree the snapshot is kept in (under `SNAPSHOT`).
pub(super) const SNAPSHOT_TREE: &[u8] = b"snapshot";
pub(super) const CHUNK_PREFIX: u8 = b'l';

pub(super) fn chunk_key(first_idx: usize) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = CHUNK_PREFIX;
    key[1..].copy_from_slice(&(first_idx as u64).to_be_bytes());
    key
}

pub(super) fn chunk_first_idx(key: &[u8]) -> Result<usize, PersistentStorageError> {
    match key {
        [CHUNK_PREFIX, rest @ ..] if rest.len() == 8 => {
            let bytes: [u8; 8] = rest.try_into().expect("length checked to be 8");
            Ok(u64::from_be_bytes(bytes) as usize)
        }
        _ => Err(PersistentStorageError::Corrupt(format!(
            "bad chunk key {key:?}"
        ))),
    }
}

pub(super) fn encode_usize(value: usize) -> [u8; 8] {
    (value as u64).to_be_bytes()
}

pub(super) fn decode_usize(
    bytes: &[u8],
    what: &'static str,
) -> Result<usize, PersistentStorageError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| PersistentStorageError::Decode {
            what,
            message: format!("expected 8 bytes, found {}", bytes.len()),
        })?;
    Ok(u64::from_be_bytes(bytes) as usize)
}

pub(super) fn encode<V: Serialize + ?Sized>(
    value: &V,
    what: &'static str,
) -> Result<Vec<u8>, PersistentStorageError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        PersistentStorageError::Encode {
            what,
            message: e.to_string(),
        }
    })
}

pub(super) fn decode<V: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<V, PersistentStorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|e| PersistentStorageError::Decode {
            what,
            message: e.to_string(),
        })
}

pub(super) fn encode_chunk<T: Serialize>(entries: &[T]) -> Result<Vec<u8>, PersistentStorageError> {
    let mut value = encode_usize(entries.len()).to_vec();
    value.extend(encode(entries, "log chunk")?);
    Ok(value)
}

/// The number of entries in a chunk value, read from its header only.
pub(super) fn chunk_len(value: &[u8]) -> Result<usize, PersistentStorageError> {
    if value.len() < 8 {
        return Err(PersistentStorageError::Corrupt(
            "chunk shorter than its header".into(),
        ));
    }
    decode_usize(&value[..8], "chunk header")
}

pub(super) fn decode_chunk<T: DeserializeOwned>(
    value: &[u8],
) -> Result<Vec<T>, PersistentStorageError> {
    let len = chunk_len(value)?;
    let entries: Vec<T> = decode(&value[8..], "log chunk")?;
    if entries.len() != len {
        return Err(PersistentStorageError::Corrupt(format!(
            "chunk header says {len} entries, body has {}",
            entries.len()
        )));
    }
    Ok(entries)
}
