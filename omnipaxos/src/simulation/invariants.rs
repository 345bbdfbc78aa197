//! The safety invariants of DESIGN.md §2, checked by the simulator after every step:
//! agreement, validity, stability, a unique leader per ballot, the finality of a StopSign, and
//! safe compaction. Checks after a step are incremental (they read only what was decided since);
//! every few steps, and on demand, the whole decided log of every server is read again.

use crate::ballot::Ballot;
use crate::ids::NodeId;
use crate::omni_paxos::OmniPaxos;
use crate::storage::{Entry, StopSign, Storage};
use crate::util::LogEntry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// What the checker remembers about one server.
#[derive(Default)]
struct ServerProgress {
    /// Everything below this index has been compared with the chosen log.
    checked_idx: usize,
    /// The highest decided index seen, across restarts.
    decided_idx: usize,
}

/// The global truth the servers are compared with.
pub(crate) struct InvariantChecker<T: Entry + Eq + Hash> {
    /// The first value seen decided at each index (`None` where only compacted reads were seen).
    chosen: Vec<Option<T>>,
    chosen_stopsign: Option<(usize, StopSign)>,
    proposed: HashMap<T, usize>,
    decided_count: HashMap<T, usize>,
    servers: BTreeMap<NodeId, ServerProgress>,
    leaders: BTreeMap<(u32, u32, NodeId), NodeId>,
}

impl<T: Entry + Eq + Hash> InvariantChecker<T> {
    pub(crate) fn new() -> Self {
        Self {
            chosen: Vec::new(),
            chosen_stopsign: None,
            proposed: HashMap::new(),
            decided_count: HashMap::new(),
            servers: BTreeMap::new(),
            leaders: BTreeMap::new(),
        }
    }

    /// Records a user proposal, which makes one decided copy of `entry` valid.
    pub(crate) fn record_proposal(&mut self, entry: T) {
        *self.proposed.entry(entry).or_default() += 1;
    }

    /// The highest decided index seen on any server, across restarts.
    pub(crate) fn max_decided_seen(&self) -> usize {
        self.servers
            .values()
            .map(|p| p.decided_idx)
            .max()
            .unwrap_or(0)
    }

    /// The decided log as far as any server has decided it.
    pub(crate) fn chosen(&self) -> &[Option<T>] {
        &self.chosen
    }

    /// Like [`Self::check_server`], but re-reads the whole decided log of the server, so an
    /// entry changed below what was checked before is caught too.
    pub(crate) fn check_server_fully<B: Storage<T>>(
        &mut self,
        pid: NodeId,
        op: &OmniPaxos<T, B>,
    ) -> Result<(), String> {
        if let Some(progress) = self.servers.get_mut(&pid) {
            progress.checked_idx = 0;
        }
        self.check_server(pid, op)
    }

    pub(crate) fn check_server<B: Storage<T>>(
        &mut self,
        pid: NodeId,
        op: &OmniPaxos<T, B>,
    ) -> Result<(), String> {
        let decided = op.get_decided_idx();
        let compacted = op.get_compacted_idx();
        let progress = self.servers.entry(pid).or_default();
        if decided < progress.decided_idx {
            return Err(format!(
                "stability: server {pid}'s decided index went from {} down to {decided}",
                progress.decided_idx
            ));
        }
        progress.decided_idx = decided;
        if compacted > decided {
            return Err(format!(
                "compaction: server {pid} compacted {compacted} entries but decided only {decided}"
            ));
        }
        if op.get_accepted_idx() < decided {
            return Err(format!(
                "server {pid} decided {decided} but its accepted log is {}",
                op.get_accepted_idx()
            ));
        }
        let from = progress.checked_idx;
        if from < decided {
            let entries = op.read_entries(from..decided).ok_or_else(|| {
                format!("server {pid}: reading decided range [{from}, {decided}) failed")
            })?;
            self.check_decided_entries(pid, from, decided, compacted, entries)?;
        }
        if let Some(p) = self.servers.get_mut(&pid) {
            p.checked_idx = decided;
        }
        if let Some((leader, true)) = op.get_current_leader() {
            if leader == pid {
                self.check_unique_leader(pid, op.get_promise())?;
            }
        }
        Ok(())
    }

    fn check_decided_entries(
        &mut self,
        pid: NodeId,
        from: usize,
        decided: usize,
        compacted: usize,
        entries: Vec<LogEntry<T>>,
    ) -> Result<(), String> {
        let mut idx = from;
        for entry in entries {
            match entry {
                LogEntry::Decided(e) => {
                    self.check_chosen(pid, idx, e)?;
                    idx += 1;
                }
                LogEntry::Trimmed(t)
                | LogEntry::Snapshotted(crate::util::SnapshottedEntry { trimmed_idx: t, .. }) => {
                    if t != compacted {
                        return Err(format!(
                            "compaction: server {pid} reads a compacted prefix of {t}, but reports {compacted}"
                        ));
                    }
                    idx = idx.max(t);
                }
                LogEntry::StopSign(ss, is_decided) => {
                    if !is_decided {
                        return Err(format!(
                            "server {pid}: StopSign inside the decided range is not decided"
                        ));
                    }
                    self.check_stopsign(pid, idx, ss)?;
                    idx += 1;
                }
                LogEntry::Undecided(_) => {
                    return Err(format!(
                        "server {pid}: index {idx} < decided {decided} reads as Undecided"
                    ));
                }
            }
        }
        if idx != decided {
            return Err(format!(
                "server {pid}: the decided range [{from}, {decided}) read as {} slots",
                idx - from
            ));
        }
        Ok(())
    }

    fn check_chosen(&mut self, pid: NodeId, idx: usize, entry: T) -> Result<(), String> {
        if let Some((ss_idx, _)) = &self.chosen_stopsign {
            if idx >= *ss_idx {
                return Err(format!(
                    "StopSign: server {pid} decided an entry at {idx}, after the StopSign at {ss_idx}"
                ));
            }
        }
        if idx < self.chosen.len() {
            if let Some(existing) = &self.chosen[idx] {
                if *existing != entry {
                    return Err(format!(
                        "agreement: server {pid} decided {entry:?} at {idx}, another server decided {existing:?}"
                    ));
                }
                return Ok(());
            }
        } else {
            self.chosen.resize(idx + 1, None);
        }
        let proposed = self.proposed.get(&entry).copied().unwrap_or(0);
        let decided = self.decided_count.entry(entry.clone()).or_default();
        if *decided >= proposed {
            return Err(format!(
                "validity: {entry:?} decided at {idx} more often ({}) than proposed ({proposed})",
                *decided + 1
            ));
        }
        *decided += 1;
        self.chosen[idx] = Some(entry);
        Ok(())
    }

    fn check_stopsign(&mut self, pid: NodeId, idx: usize, ss: StopSign) -> Result<(), String> {
        match &self.chosen_stopsign {
            Some((i, existing)) if *i != idx || *existing != ss => Err(format!(
                "StopSign: server {pid} decided {ss} at {idx}, another decided {existing} at {i}"
            )),
            Some(_) => Ok(()),
            None => {
                if self.chosen.iter().skip(idx).any(Option::is_some) {
                    return Err(format!(
                        "StopSign: decided at {idx} but entries were decided after it"
                    ));
                }
                self.chosen_stopsign = Some((idx, ss));
                Ok(())
            }
        }
    }

    fn check_unique_leader(&mut self, pid: NodeId, ballot: Ballot) -> Result<(), String> {
        let key = (ballot.n, ballot.priority, ballot.pid);
        match self.leaders.insert(key, pid) {
            Some(other) if other != pid => Err(format!(
                "unique leader: servers {other} and {pid} both lead in ballot {ballot}"
            )),
            _ => Ok(()),
        }
    }
}
