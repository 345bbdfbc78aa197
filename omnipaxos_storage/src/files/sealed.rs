//! Small files replaced whole and read back checked: a file's new content is written under a
//! temporary name, synced, renamed over the old one, and the directory synced, so that after a
//! crash at any point the file holds either its old or its new content, whole. The content is
//! one [checksummed record](super::record): a file that fails its check is corruption (it cannot
//! have been torn), never read as something else.

use super::record::{self, Record, WAITED};
use super::{Corruption, FileError, FileSystem};
use std::path::{Path, PathBuf};

/// The temporary name `path`'s new content is written under.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces the file at `path` by `bytes`, atomically and durably (see the module's
/// documentation).
pub fn replace(files: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = temporary_path(path);
    let file = files.open(&tmp, true).map_err(FileError::io(&tmp))?;
    file.set_len(0)
        .and_then(|()| file.write_at(bytes, 0))
        .and_then(|()| file.sync_data())
        .map_err(FileError::io(&tmp))?;
    drop(file);
    install(files, &tmp, path)
}

/// Renames the file `tmp` (written and synced) over `path` and syncs the directory: from then
/// on a crash finds the new content at `path`. Also for files written whole some other way
/// (the journal's rewrite streams its content).
pub fn install(files: &dyn FileSystem, tmp: &Path, path: &Path) -> Result<(), FileError> {
    files.rename(tmp, path).map_err(FileError::io(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    files.sync_dir(dir).map_err(FileError::io(dir))
}

/// Replaces the file at `path` by a sealed (checksummed) `payload`.
pub fn write(files: &dyn FileSystem, path: &Path, payload: &[u8]) -> Result<(), FileError> {
    replace(files, path, &record::encode(0, WAITED, payload))
}

/// The payload of the sealed file at `path`; `None` if there is no such file.
pub fn read(files: &dyn FileSystem, path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    let bytes = match files.read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io(path)(e)),
    };
    unseal(&bytes)
        .map(|payload| Some(payload.to_vec()))
        .map_err(|reason| Corruption::new(path, 0, reason).into())
}

/// The payload of a sealed file's bytes.
fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    let mut seen = 0;
    let log = record::read_log(
        bytes,
        record::Rules {
            belongs: |_: &Record<'_>| {
                seen += 1;
                match seen {
                    1 => record::Verdict::Take,
                    _ => record::Verdict::Corrupt("more than one record".into()),
                }
            },
            later: |_: &Record<'_>| true,
            // Written whole before its name: nothing in it can be torn.
            unsynced_from: Some(bytes.len() as u64 + 1),
        },
    )
    .map_err(|damage| damage.reason)?;
    match log.records.as_slice() {
        [record] if record.end() == bytes.len() as u64 => Ok(record.payload),
        _ => Err("not one whole sealed record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::OsFiles;

    #[test]
    fn a_sealed_file_reads_back_and_any_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        assert_eq!(read(&OsFiles, &path).unwrap(), None);
        write(&OsFiles, &path, b"old").unwrap();
        write(&OsFiles, &path, b"{\"position\": 42}").unwrap();
        assert_eq!(
            read(&OsFiles, &path).unwrap().as_deref(),
            Some(&b"{\"position\": 42}"[..])
        );
        assert!(!temporary_path(&path).exists());
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            std::fs::write(&path, &bad).unwrap();
            let err = read(&OsFiles, &path).unwrap_err();
            assert!(matches!(err, FileError::Corrupt(_)), "byte {at}: {err}");
        }
        for len in [0, 5, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(read(&OsFiles, &path).is_err(), "cut to {len}");
        }
    }
}
