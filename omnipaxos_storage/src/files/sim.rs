//! [`SimFiles`]: a file system in memory that keeps what was written apart from what was
//! synced, so that a test can cut the power at any point and see what a real machine could
//! keep.
//!
//! Data written to a file is pending until the file is synced; names created, renamed or
//! removed are pending until their directory is synced (a directory's sync also commits the
//! name changes made before it, as a file system's journal does). [`SimFiles::power_cut`]
//! returns the file system a restart would find: every synced byte and name, and of what
//! was pending, a seeded choice: each 512-byte sector as it was at some moment since the last
//! sync (the page cache writes sectors back whole, in any order, at any time: a write may be
//! kept, lost, or torn across sectors), the file's length as it was at some moment, and the
//! name changes up to a chosen point. [`SimFiles::die_after`] stops the machine in the middle of whatever the store
//! was doing: every call from then on fails.

use super::{FileSystem, StoredFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SECTOR: u64 = 512;

/// A change to a file's data, not yet synced.
#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What a power cut keeps for sure.
    synced: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// What turned `synced` into `current`, in order.
    pending: Vec<Change>,
}

/// A change to the names, not yet synced.
#[derive(Clone, Debug)]
enum NameChange {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl NameChange {
    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            NameChange::Link(path, inode) => {
                names.insert(path.clone(), *inode);
            }
            NameChange::Unlink(path) => {
                names.remove(path);
            }
            NameChange::Rename(from, to) => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
        }
    }

    fn touches(&self, dir: &Path) -> bool {
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            NameChange::Link(p, _) | NameChange::Unlink(p) => in_dir(p),
            NameChange::Rename(from, to) => in_dir(from) || in_dir(to),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The names reads see.
    names: BTreeMap<PathBuf, u64>,
    /// The names a power cut keeps for sure.
    synced_names: BTreeMap<PathBuf, u64>,
    /// What turned `synced_names` into `names`, in order.
    pending_names: Vec<NameChange>,
    dirs: BTreeSet<PathBuf>,
    locked: BTreeSet<PathBuf>,
    /// Calls left before the machine stops (`None`: it runs on).
    calls_left: Option<u64>,
    /// Calls made, all told.
    calls: u64,
}

/// A simulated file system (see the module's documentation). Clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimFiles {
    state: Arc<Mutex<State>>,
}

fn stopped() -> io::Error {
    io::Error::other("the machine lost power")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

/// A seeded random number generator (splitmix64): the cut's choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let (start, end) = (offset as usize, offset as usize + bytes.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

impl SimFiles {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call after the next `calls` fails, as if the machine lost power then.
    pub fn die_after(&self, calls: u64) {
        self.state().calls_left = Some(calls);
    }

    /// How many calls were made so far (to choose where to die).
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    /// The file system a restart after a power cut now finds (see the module's
    /// documentation); `seed` makes the choices. This one is left as it is.
    pub fn power_cut(&self, seed: u64) -> SimFiles {
        let state = self.state();
        let mut choose = Choices(seed);
        let kept_changes = choose.below(state.pending_names.len() as u64 + 1) as usize;
        let mut names = state.synced_names.clone();
        for change in &state.pending_names[..kept_changes] {
            change.apply(&mut names);
        }
        let mut inodes = BTreeMap::new();
        for inode in names.values().copied().collect::<BTreeSet<_>>() {
            let Some(old) = state.inodes.get(&inode) else {
                continue;
            };
            let data = after_cut(old, &mut choose);
            let restarted = Inode {
                synced: data.clone(),
                current: data,
                pending: Vec::new(),
            };
            inodes.insert(inode, restarted);
        }
        SimFiles {
            state: Arc::new(Mutex::new(State {
                inodes,
                next_inode: state.next_inode,
                synced_names: names.clone(),
                names,
                pending_names: Vec::new(),
                dirs: state.dirs.clone(),
                locked: BTreeSet::new(),
                calls_left: None,
                calls: 0,
            })),
        }
    }

    /// Flips the bits of `mask` in byte `offset` of the file at `path`, on the synced copy
    /// too (damage on the device).
    pub fn corrupt(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let mut state = self.state();
        let inode = *state.names.get(path).ok_or_else(|| not_found(path))?;
        let file = state
            .inodes
            .get_mut(&inode)
            .ok_or_else(|| not_found(path))?;
        for data in [&mut file.synced, &mut file.current] {
            if let Some(byte) = data.get_mut(offset as usize) {
                *byte ^= mask;
            }
        }
        Ok(())
    }

    /// Runs `f` on the state unless the machine stopped.
    fn call<R>(&self, f: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
        let mut state = self.state();
        if let Some(left) = state.calls_left.as_mut() {
            if *left == 0 {
                return Err(stopped());
            }
            *left -= 1;
        }
        state.calls += 1;
        f(&mut state)
    }
}

/// What the device holds of `file` after a cut: each 512-byte sector as it was after some
/// prefix of the pending changes (the page cache writes a sector back whole, at any moment),
/// chosen per sector, and the length as it was after some prefix too.
fn after_cut(file: &Inode, choose: &mut Choices) -> Vec<u8> {
    let n = file.pending.len() as u64;
    let kept_len = choose.below(n + 1) as usize;
    let mut len = file.synced.len() as u64;
    let mut sectors_kept: BTreeMap<u64, usize> = BTreeMap::new();
    let mut data = file.synced.clone();
    for (i, change) in file.pending.iter().enumerate() {
        let (from, to) = match change {
            Change::Write { offset, bytes } => (*offset, offset + bytes.len() as u64),
            Change::SetLen(new_len) => ((*new_len).min(len), (*new_len).max(len)),
        };
        if i < kept_len {
            len = match change {
                Change::Write { .. } => len.max(to),
                Change::SetLen(new_len) => *new_len,
            };
        }
        let mut sector = from / SECTOR;
        while sector * SECTOR < to {
            let kept = *sectors_kept
                .entry(sector)
                .or_insert_with(|| choose.below(n + 1) as usize);
            if i < kept {
                let (lo, hi) = ((sector * SECTOR).max(from), ((sector + 1) * SECTOR).min(to));
                if data.len() < hi as usize {
                    data.resize(hi as usize, 0);
                }
                let part = &mut data[lo as usize..hi as usize];
                match change {
                    Change::Write { offset, bytes } => {
                        part.copy_from_slice(&bytes[(lo - offset) as usize..(hi - offset) as usize])
                    }
                    // A cut or an extension: zeros either way.
                    Change::SetLen(_) => part.fill(0),
                }
            }
            sector += 1;
        }
    }
    data.resize(len as usize, 0);
    data
}

struct SimFile {
    files: SimFiles,
    inode: u64,
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut Inode) -> R) -> io::Result<R> {
        let inode = self.inode;
        self.files.call(|state| {
            let file = state
                .inodes
                .get_mut(&inode)
                .ok_or_else(|| io::Error::other("file vanished"))?;
            Ok(f(file))
        })
    }
}

impl StoredFile for SimFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|file| {
            write_into(&mut file.current, offset, buf);
            file.pending.push(Change::Write {
                offset,
                bytes: buf.to_vec(),
            });
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|file| {
            let from = offset as usize;
            match file.current.get(from..from + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            }
        })?
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|file| file.current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|file| {
            file.current.resize(len as usize, 0);
            file.pending.push(Change::SetLen(len));
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|file| {
            file.synced = file.current.clone();
            file.pending.clear();
        })
    }
}

impl FileSystem for SimFiles {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.call(|state| {
            for ancestor in dir.ancestors() {
                state.dirs.insert(ancestor.to_path_buf());
            }
            Ok(())
        })
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoredFile>> {
        let inode = self.call(|state| {
            if let Some(inode) = state.names.get(path) {
                return Ok(*inode);
            }
            let parent = path.parent().unwrap_or(Path::new(""));
            if !create || !state.dirs.contains(parent) {
                return Err(not_found(path));
            }
            state.next_inode += 1;
            let inode = state.next_inode;
            state.inodes.insert(inode, Inode::default());
            state.names.insert(path.to_path_buf(), inode);
            state
                .pending_names
                .push(NameChange::Link(path.to_path_buf(), inode));
            Ok(inode)
        })?;
        Ok(Arc::new(SimFile {
            files: self.clone(),
            inode,
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.call(|state| Ok(state.names.contains_key(path)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.call(|state| {
            let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
            state.names.insert(to.to_path_buf(), inode);
            let change = NameChange::Rename(from.to_path_buf(), to.to_path_buf());
            state.pending_names.push(change);
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.call(|state| {
            state.names.remove(path).ok_or_else(|| not_found(path))?;
            state
                .pending_names
                .push(NameChange::Unlink(path.to_path_buf()));
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.call(|state| {
            let last = state.pending_names.iter().rposition(|c| c.touches(dir));
            if let Some(last) = last {
                let committed: Vec<NameChange> = state.pending_names.drain(..=last).collect();
                for change in committed {
                    change.apply(&mut state.synced_names);
                }
            }
            Ok(())
        })
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.call(|state| {
            if !state.dirs.contains(dir) {
                return Err(not_found(dir));
            }
            Ok(state
                .names
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                .collect())
        })
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Send + Sync>> {
        self.call(|state| {
            if !state.locked.insert(dir.to_path_buf()) {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            Ok(())
        })?;
        Ok(Box::new(DirLock {
            files: self.clone(),
            dir: dir.to_path_buf(),
        }))
    }
}

/// Frees a simulated directory when dropped.
struct DirLock {
    files: SimFiles,
    dir: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        self.files.state().locked.remove(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_and_names_survive_every_cut_and_the_rest_may_not() {
        let files = SimFiles::new();
        let dir = Path::new("/data");
        files.create_dir_all(dir).unwrap();
        let durable = files.open(&dir.join("durable"), true).unwrap();
        durable.write_at(b"kept", 0).unwrap();
        durable.sync_data().unwrap();
        files.sync_dir(dir).unwrap();
        durable.write_at(b" maybe", 4).unwrap();
        let unnamed = files.open(&dir.join("unnamed"), true).unwrap();
        unnamed.write_at(b"data", 0).unwrap();
        unnamed.sync_data().unwrap();
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let after = files.power_cut(seed);
            let kept = after.read(&dir.join("durable")).unwrap();
            assert_eq!(&kept[..4], b"kept", "seed {seed}");
            let named = after.exists(&dir.join("unnamed")).unwrap();
            outcomes.insert((kept.len(), named));
        }
        assert!(outcomes.contains(&(4, false)), "{outcomes:?}");
        assert!(outcomes.contains(&(10, true)), "{outcomes:?}");
    }

    #[test]
    fn a_machine_that_died_answers_nothing() {
        let files = SimFiles::new();
        files.create_dir_all(Path::new("/d")).unwrap();
        files.die_after(1);
        let file = files.open(Path::new("/d/f"), true).unwrap();
        assert!(file.write_at(b"x", 0).is_err());
        for seed in 0..20 {
            let after = files.power_cut(seed).read(Path::new("/d/f"));
            assert!(
                after.map_or(true, |bytes| bytes.is_empty()),
                "the write never ran"
            );
        }
    }
}
