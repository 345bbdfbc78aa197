//! Whose a data directory is: written at its creation, checked at every start, so that a node
//! started on another node's directory (or another cluster's, or a newer release's) refuses to
//! run with promises that are not its own.

use super::{sealed, FileError, FileSystem};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file in a data directory that names its owner.
pub const IDENTITY_FILE: &str = "identity";

/// The owner of a data directory and the format of what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirIdentity {
    /// The cluster the directory's node belongs to.
    pub cluster: String,
    /// The node's pid.
    pub pid: u64,
    /// The version of the directory's file formats.
    pub format: u32,
}

/// Why a directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The identity file could not be read or written, or is corrupt.
    #[error(transparent)]
    File(#[from] FileError),
    /// The directory belongs to another node or cluster.
    #[error("{}: the directory belongs to node {} of cluster {:?}, not to node {} of cluster {:?}", dir.display(), found.pid, found.cluster, expected.pid, expected.cluster)]
    Mismatch {
        /// The directory.
        dir: PathBuf,
        /// Its identity.
        found: DirIdentity,
        /// The identity asked for.
        expected: DirIdentity,
    },
    /// The directory was written by a release with a newer format.
    #[error("{}: format {found} is newer than this release's ({supported})", dir.display())]
    NewerFormat {
        /// The directory.
        dir: PathBuf,
        /// Its format.
        found: u32,
        /// The newest format this release reads.
        supported: u32,
    },
    /// The directory holds state but no identity: it is not one this release created, or its
    /// identity file was lost.
    #[error("{}: holds state but no identity file", dir.display())]
    Missing {
        /// The directory.
        dir: PathBuf,
    },
}

/// Checks that `dir` is `expected`'s, writing the identity if the directory is new (it holds
/// no state: `has_state` is false). Returns the identity found (its format may be older than
/// `expected.format`, for the caller to migrate).
pub fn claim(
    files: &dyn FileSystem,
    dir: &Path,
    expected: &DirIdentity,
    has_state: bool,
) -> Result<DirIdentity, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let corrupt = |reason: String| FileError::from(super::Corruption::new(&path, 0, reason));
    let Some(bytes) = sealed::read(files, &path)? else {
        if has_state {
            return Err(IdentityError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        files.create_dir_all(dir).map_err(FileError::io(dir))?;
        let encoded = bincode::serde::encode_to_vec(expected, bincode::config::standard())
            .map_err(|e| corrupt(e.to_string()))?;
        sealed::write(files, &path, &encoded)?;
        return Ok(expected.clone());
    };
    let (found, _): (DirIdentity, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map_err(|e| corrupt(e.to_string()))?;
    if found.format > expected.format {
        return Err(IdentityError::NewerFormat {
            dir: dir.to_path_buf(),
            found: found.format,
            supported: expected.format,
        });
    }
    if (&found.cluster, found.pid) != (&expected.cluster, expected.pid) {
        return Err(IdentityError::Mismatch {
            dir: dir.to_path_buf(),
            found,
            expected: expected.clone(),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::OsFiles;

    fn node(pid: u64) -> DirIdentity {
        DirIdentity {
            cluster: "test".into(),
            pid,
            format: 1,
        }
    }

    #[test]
    fn a_directory_is_claimed_once_and_refused_to_anyone_else() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            claim(&OsFiles, dir.path(), &node(1), false).unwrap(),
            node(1)
        );
        assert_eq!(
            claim(&OsFiles, dir.path(), &node(1), true).unwrap(),
            node(1)
        );
        let other = claim(&OsFiles, dir.path(), &node(2), true).unwrap_err();
        assert!(matches!(other, IdentityError::Mismatch { .. }), "{other}");
        let older = DirIdentity {
            format: 0,
            ..node(1)
        };
        let newer = claim(&OsFiles, dir.path(), &older, true).unwrap_err();
        assert!(
            matches!(newer, IdentityError::NewerFormat { .. }),
            "{newer}"
        );
        let fresh = tempfile::tempdir().unwrap();
        let missing = claim(&OsFiles, fresh.path(), &node(1), true).unwrap_err();
        assert!(
            matches!(missing, IdentityError::Missing { .. }),
            "{missing}"
        );
    }
}
