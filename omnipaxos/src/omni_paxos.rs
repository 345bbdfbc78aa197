//! [`OmniPaxos`], the one type users drive: it owns Ballot Leader Election, Sequence Paxos and
//! the three logical clocks, and turns storage failures into a fail-stop state.

use crate::ballot::Ballot;
use crate::ballot_leader_election::BallotLeaderElection;
use crate::clock::LogicalClock;
use crate::config::{ClusterConfig, OmniPaxosConfig};
use crate::errors::propose::ProposeErr;
use crate::errors::{CompactionErr, ConfigError, ReadErr, StorageError};
use crate::ids::NodeId;
use crate::logging::log;
use crate::messages::Message;
use crate::quorum::Quorum;
use crate::read_state::{ReadFailure, ReadState};
use crate::reconfiguration::Handover;
use crate::sequence_paxos::{Phase, ReadLease, Role, SequencePaxos};
use crate::storage::internal_storage::{InternalStorage, StorageResult};
use crate::storage::{Entry, Snapshot, StopSign, Storage};
use crate::util::LogEntry;
use crate::utils::ui::{ClusterState, OmniPaxosStates};
use std::ops::RangeBounds;

/// A read fails with `ReadErr::Timeout` after this many times the larger of the election and
/// resend timeouts (in ticks): long enough for a lost confirmation to be asked again twice.
const READ_TIMEOUT_FACTOR: u64 = 3;

/// Largest pid for which `ClusterState::accepted_indexes` is filled in.
const MAX_UI_PID: NodeId = 4096;

/// One server of a replicated log.
///
/// Sans-IO: it never sleeps, reads a clock, spawns or touches the network. Drive it with
/// [`tick`](Self::tick) at a regular interval, hand it every message that arrives with
/// [`handle_incoming`](Self::handle_incoming), and send what
/// [`take_outgoing_messages`](Self::take_outgoing_messages) gives you.
///
/// If the storage returns an error the instance stops taking part (fail-stop): it ignores
/// messages and ticks, refuses proposals with [`ProposeErr::StorageFailed`], and reports the
/// error through [`get_storage_error`](Self::get_storage_error). Everything it stored before
/// the failure is intact; build a new instance on the same storage to resume.
pub struct OmniPaxos<T: Entry, B: Storage<T>> {
    seq_paxos: SequencePaxos<T, B>,
    ble: BallotLeaderElection,
    election_clock: LogicalClock,
    resend_clock: LogicalClock,
    flush_batch_clock: LogicalClock,
    storage_error: Option<StorageError>,
    /// Whether this instance started from a used store (a restart).
    recovered: bool,
    /// The configuration it was built with, for runtimes that drive it.
    config: OmniPaxosConfig,
}

impl<T: Entry, B: Storage<T>> OmniPaxos<T, B> {
    /// Builds the instance from a validated config (see [`OmniPaxosConfig::build`]).
    pub(crate) fn new(config: OmniPaxosConfig, storage: B) -> Result<Self, ConfigError> {
        let kept = config.clone();
        let OmniPaxosConfig {
            cluster_config,
            server_config,
        } = config;
        let pid = server_config.pid;
        let nodes = &cluster_config.nodes;
        let quorum = Quorum::new(nodes.len(), cluster_config.flexible_quorum);
        let (mut internal, found_promise) =
            InternalStorage::load(storage, server_config.batch_size)?;
        if found_promise.is_none() {
            // Mark the store as used, so that a restart from it runs recovery.
            internal.set_promise(Ballot::default())?;
        }
        let recovered_leader = found_promise.filter(|b| *b != Ballot::default());
        let read_timeout_ticks = READ_TIMEOUT_FACTOR
            * server_config
                .election_tick_timeout
                .max(server_config.resend_message_tick_timeout);
        let mut seq_paxos = SequencePaxos::new(
            internal,
            pid,
            cluster_config.configuration_id,
            nodes,
            quorum,
            server_config.buffer_size,
            read_timeout_ticks,
        );
        if found_promise.is_some() {
            log!(
                info,
                pid,
                "recovering from storage, promise {:?}",
                found_promise
            );
            seq_paxos.start_recovery();
        }
        let ble = BallotLeaderElection::new(
            pid,
            nodes,
            cluster_config.configuration_id,
            server_config.leader_priority,
            quorum,
            recovered_leader,
        );
        Ok(Self {
            seq_paxos,
            ble,
            election_clock: LogicalClock::with(server_config.election_tick_timeout),
            resend_clock: LogicalClock::with(server_config.resend_message_tick_timeout),
            flush_batch_clock: LogicalClock::with(server_config.flush_batch_tick_timeout),
            storage_error: None,
            recovered: found_promise.is_some(),
            config: kept,
        })
    }

    /// Records a storage failure: from now on the instance takes no part in the protocol.
    fn check<X>(&mut self, result: StorageResult<X>) -> Option<X> {
        match result {
            Ok(x) => Some(x),
            Err(err) => {
                log!(error, self.seq_paxos.pid(), "stopping: {err}");
                self.storage_error = Some(err);
                None
            }
        }
    }

    /// Proposes `entry` for the log. On the leader it is appended (and batched); on a follower
    /// it is forwarded to the leader; with no leader known it is kept here until one is.
    ///
    /// Group commit: the leader writes everything appended since the last call in *one* storage
    /// write, and replicates it in one message per follower, when you next call
    /// [`take_outgoing_messages`](Self::take_outgoing_messages) or [`tick`](Self::tick). Until
    /// then the entry counts in [`get_accepted_idx`](Self::get_accepted_idx) and reads as
    /// `Undecided`, and a storage failure shows up at that call.
    ///
    /// `Ok` means the entry was taken, not that it is decided: watch the decided log for it.
    /// See the crate docs, "When can an appended entry be lost?", for exactly when it can be.
    pub fn append(&mut self, entry: T) -> Result<(), ProposeErr<T>> {
        if let Some(err) = &self.storage_error {
            return Err(ProposeErr::StorageFailed(err.clone()));
        }
        let result = self.seq_paxos.append(entry);
        if let Err(ProposeErr::StorageFailed(err)) = &result {
            self.storage_error = Some(err.clone());
        }
        result
    }

    /// Proposes to end this configuration with a StopSign naming `new_configuration`. Once the
    /// StopSign is decided, the log is sealed and every server reads
    /// `LogEntry::StopSign(stopsign, true)` at its end.
    pub fn reconfigure(
        &mut self,
        new_configuration: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), ProposeErr<T>> {
        if let Some(err) = &self.storage_error {
            return Err(ProposeErr::StorageFailed(err.clone()));
        }
        let result = self.seq_paxos.reconfigure(new_configuration, metadata);
        if let Err(ProposeErr::StorageFailed(err)) = &result {
            self.storage_error = Some(err.clone());
        }
        result
    }

    /// Handles a message from a peer. Messages that do not fit (another receiver, a sender
    /// outside the configuration, a stale ballot, an out-of-sequence number) are dropped.
    pub fn handle_incoming(&mut self, m: Message<T>) {
        if self.storage_error.is_some() {
            return;
        }
        if !m.has_plausible_ballots() {
            log!(
                warn,
                self.seq_paxos.pid(),
                "dropped a message with a round no correct server reaches: {m}"
            );
            return;
        }
        match m {
            Message::SequencePaxos(m) => {
                let result = self.seq_paxos.handle(m);
                self.check(result);
            }
            Message::BLE(m) => self.ble.handle(m),
        }
    }

    /// Moves every pending outgoing message into `buffer`: Sequence Paxos messages first, then
    /// heartbeats. Call it after each batch of inputs and send the messages to their receivers.
    ///
    /// First it writes what the leader appended since the last call (one storage write for the
    /// whole burst), so that no message leaves before the state it reports is stored.
    pub fn take_outgoing_messages(&mut self, buffer: &mut Vec<Message<T>>) {
        if self.storage_error.is_none() {
            let result = self.seq_paxos.write_pending();
            self.check(result);
        }
        self.seq_paxos
            .take_outgoing_into(buffer, Message::SequencePaxos);
        buffer.extend(self.ble.take_outgoing().map(Message::BLE));
    }

    /// [`take_outgoing_messages`](Self::take_outgoing_messages) for a leader that writes in
    /// parallel with its followers: the messages that replicate the entries appended since the
    /// last write are handed to `before_write` **before** this server writes them to its own
    /// storage; send them at once (without waiting), and the followers' writes overlap with the
    /// leader's. The leader still counts itself for an entry only once its own write returned,
    /// and nothing decided depends on an unwritten entry. On a follower, or with nothing new to
    /// replicate (or no follower to send it to), `before_write` is not called. Every message
    /// handed to `before_write` and to `buffer` must be sent, in that order.
    pub fn take_outgoing_messages_pipelined(
        &mut self,
        buffer: &mut Vec<Message<T>>,
        before_write: impl FnOnce(&mut Vec<Message<T>>),
    ) {
        if self.storage_error.is_none() && self.seq_paxos.replicate_unwritten() {
            let mut early = Vec::new();
            self.seq_paxos
                .take_outgoing_into(&mut early, Message::SequencePaxos);
            if !early.is_empty() {
                before_write(&mut early);
            }
        }
        self.take_outgoing_messages(buffer);
    }

    /// Advances the logical clocks by one tick: every `election_tick_timeout` ticks a heartbeat
    /// round ends, every `resend_message_tick_timeout` ticks lost messages are repaired, and
    /// every `flush_batch_tick_timeout` ticks a partial batch is flushed.
    pub fn tick(&mut self) {
        if self.storage_error.is_some() {
            return;
        }
        let result = self.seq_paxos.write_pending();
        if self.check(result).is_none() {
            return;
        }
        if self.election_clock.tick_and_check_timeout() {
            let promise = self.seq_paxos.promise();
            let leading = self.seq_paxos.is_accepting_leader();
            let elected = self.ble.hb_timeout(promise, leading);
            // Sequence Paxos may have declined to take over when elected (a read lease held
            // another ballot): the election asks again every round until it does.
            let own = self.ble.leader();
            let retry =
                (own.pid == self.seq_paxos.pid() && own > self.seq_paxos.promise()).then_some(own);
            if let Some(leader) = elected.or(retry) {
                let result = self.seq_paxos.handle_leader(leader);
                self.check(result);
            }
        }
        self.seq_paxos.tick_reads();
        if self.resend_clock.tick_and_check_timeout() {
            let result = self.seq_paxos.resend_messages();
            self.check(result);
        }
        if self.flush_batch_clock.tick_and_check_timeout() {
            let result = self.seq_paxos.flush_batch_timeout();
            self.check(result);
        }
    }

    /// Asks for a linearizable read, numbered `ctx` by you, without writing the log (the read
    /// index). On the leader, once a write quorum has confirmed in a round that started after
    /// this call that it still leads (many reads share one round, and acknowledgements of
    /// entries in flight count), the read comes out of [`take_read_states`](Self::take_read_states)
    /// with an index: once this server's decided index and your applied state reach it, your
    /// state answers the read linearizably. On a follower the read goes to the leader for its
    /// index and is served from the follower's own state. A new leader serves reads only once it
    /// decided everything it adopted.
    ///
    /// Every read ends: if the leader changes or it is not confirmed within three times the
    /// larger of the election and resend timeouts (in ticks), it comes out of
    /// [`take_read_failures`](Self::take_read_failures) instead. `Err` means it cannot start:
    /// no leader is known here, the configuration is sealed by a StopSign, or the instance
    /// stopped on a storage failure. See `docs/reads.md`.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadErr> {
        if let Some(err) = &self.storage_error {
            return Err(ReadErr::StorageFailed(err.clone()));
        }
        self.seq_paxos.read_index(ctx)
    }

    /// Turns on leader leases for reads (`None` turns them off; off by default). With a lease, a
    /// leader whose leadership a write quorum confirmed less than `duration_ticks` of its ticks
    /// ago answers [`read_index`](Self::read_index) at once, with no round trip.
    ///
    /// **The assumption that makes it safe:** no server's tick rate differs from another's by
    /// more than `max_drift_percent`. Every server that confirms a leader then promises no other
    /// ballot for `duration_ticks * (100 + d) / (100 - d) + 1` of its own ticks (so elections
    /// after a leader failure wait that much longer), and a server restarted from storage holds
    /// that long after it starts. Call it with the same value on every server of the
    /// configuration, right after building them: a server without the lease does not hold.
    /// See `docs/reads.md`.
    pub fn set_read_lease(&mut self, lease: Option<ReadLease>) {
        self.seq_paxos.set_read_lease(lease, self.recovered);
    }

    /// Moves the reads that may now be served into `out` (see [`read_index`](Self::read_index)).
    pub fn take_read_states(&mut self, out: &mut Vec<ReadState>) {
        self.seq_paxos.take_read_states(out);
    }

    /// Moves the reads that failed into `out`, each with its reason; retry them or report it.
    pub fn take_read_failures(&mut self, out: &mut Vec<ReadFailure>) {
        self.seq_paxos.take_read_failures(out);
    }

    /// The entry at `idx`, or `None` beyond the accepted log (or on a storage error). A
    /// compacted index reads as the single `Trimmed`/`Snapshotted` entry.
    pub fn read(&self, idx: usize) -> Option<LogEntry<T>> {
        self.read_entries(idx..=idx)?.into_iter().next()
    }

    /// The entries in `r` (an open end means up to the accepted index), or `None` if the range
    /// is empty or reaches beyond the accepted log. A compacted prefix reads as one entry.
    pub fn read_entries<R: RangeBounds<usize>>(&self, r: R) -> Option<Vec<LogEntry<T>>> {
        self.seq_paxos.read_entries(r)
    }

    /// The decided entries from `from_idx` on, or `None` if there are none.
    pub fn read_decided_suffix(&self, from_idx: usize) -> Option<Vec<LogEntry<T>>> {
        let decided_idx = self.get_decided_idx();
        if from_idx >= decided_idx {
            return None;
        }
        self.read_entries(from_idx..decided_idx)
    }

    /// The number of decided slots (a decided StopSign counts as one).
    pub fn get_decided_idx(&self) -> usize {
        self.seq_paxos.internal_storage.decided_idx()
    }

    /// The length of the written accepted log, compacted prefix and StopSign slot included;
    /// entries still in the batch are not counted.
    pub fn get_accepted_idx(&self) -> usize {
        self.seq_paxos.internal_storage.visible_accepted_idx()
    }

    /// The number of entries waiting in the batch.
    pub fn get_batched_len(&self) -> usize {
        self.seq_paxos.internal_storage.batch_len()
    }

    /// How many write calls this instance made into its storage since it was built: promises,
    /// decided indices, appended batches and synchronisations each count one. With a durable
    /// store each is one flush, so this over the decided entries measures how well writes are
    /// batched.
    pub fn get_storage_write_count(&self) -> u64 {
        self.seq_paxos.internal_storage.write_count()
    }

    /// The length of the compacted (trimmed or snapshotted) prefix.
    pub fn get_compacted_idx(&self) -> usize {
        self.seq_paxos.internal_storage.compacted_idx()
    }

    /// The leader this server follows (the owner of its promised ballot), and whether this
    /// server has seen that leader reach the accept phase: `true` on the leader once a read
    /// quorum promised, and on a follower once the leader synchronised it. `None` before any
    /// promise. A `true` leader may still have been replaced by a newer one that this server
    /// has not heard from; only a decided entry proves leadership.
    pub fn get_current_leader(&self) -> Option<(NodeId, bool)> {
        let promise = self.seq_paxos.promise();
        if promise.pid == 0 {
            return None;
        }
        let (_, phase) = self.seq_paxos.role_and_phase();
        Some((promise.pid, phase == Phase::Accept))
    }

    /// The configuration this instance was built with: its cluster (id, nodes, quorum) and
    /// this server's settings. A runtime reads it to tag messages and to build the next
    /// configuration's instance with the same server settings.
    pub fn get_config(&self) -> &OmniPaxosConfig {
        &self.config
    }

    /// The promised ballot.
    pub fn get_promise(&self) -> Ballot {
        self.seq_paxos.promise()
    }

    /// This server's pid.
    pub fn get_pid(&self) -> NodeId {
        self.seq_paxos.pid()
    }

    /// The decided StopSign, once this configuration has ended.
    pub fn is_reconfigured(&self) -> Option<StopSign> {
        let s = &self.seq_paxos.internal_storage;
        if s.stopsign_is_decided() {
            s.stopsign().cloned()
        } else {
            None
        }
    }

    /// Once this configuration ended (its StopSign is decided), what a server joining the next
    /// configuration needs: the decided log up to the StopSign and the next configuration.
    /// `None` before that, or if the storage cannot be read.
    pub fn handover(&self) -> Option<Handover<T>> {
        let stopsign = self.is_reconfigured()?;
        let s = &self.seq_paxos.internal_storage;
        let snapshot = if T::Snapshot::use_snapshots() {
            s.get_snapshot().ok()?
        } else {
            None
        };
        let entries = s.get_entries(s.compacted_idx(), s.log_end()).ok()?;
        if entries.len() != s.log_end() - s.compacted_idx() {
            return None;
        }
        Some(Handover {
            stopsign,
            compacted_idx: s.compacted_idx(),
            snapshot,
            entries,
        })
    }

    /// The storage error that stopped this instance, if any.
    pub fn get_storage_error(&self) -> Option<&StorageError> {
        self.storage_error.as_ref()
    }

    /// Leader only: drops the log up to `trim_index` (default: as far as every server has
    /// accepted) here and on the peers. The prefix's state is gone, with or without snapshots:
    /// reads below the index return [`LogEntry::Trimmed`](crate::util::LogEntry::Trimmed) (use
    /// [`OmniPaxos::snapshot`] to keep it).
    pub fn trim(&mut self, trim_index: Option<usize>) -> Result<(), CompactionErr> {
        if self.storage_error.is_some() {
            return Err(CompactionErr::StorageFailed);
        }
        let result = self.seq_paxos.trim(trim_index);
        self.check(result)
            .unwrap_or(Err(CompactionErr::StorageFailed))
    }

    /// Whether this server carries out the compaction requests of the leader it follows (a
    /// `trim`, or a `snapshot` with `local_only = false`, called on the leader). On by default,
    /// as published. Turn it off where the application alone may decide how far its log is
    /// compacted: e.g. when its snapshots are markers of state it keeps elsewhere and makes
    /// durable on its own schedule, a prefix compacted before that state is durable would be
    /// lost by a crash. Requests from any other server are always refused.
    pub fn set_remote_compaction(&mut self, allowed: bool) {
        self.seq_paxos.set_remote_compaction(allowed);
    }

    /// Whether this server carries out its leader's compaction requests (see
    /// [`set_remote_compaction`](Self::set_remote_compaction)).
    pub fn get_remote_compaction(&self) -> bool {
        self.seq_paxos.remote_compaction()
    }

    /// Replaces the decided log up to `compact_idx` (default: the decided index) by a snapshot;
    /// unless `local_only`, asks the peers to do the same (they take the request only from the
    /// leader they follow, see [`set_remote_compaction`](Self::set_remote_compaction)).
    pub fn snapshot(
        &mut self,
        compact_idx: Option<usize>,
        local_only: bool,
    ) -> Result<(), CompactionErr> {
        if self.storage_error.is_some() {
            return Err(CompactionErr::StorageFailed);
        }
        let result = self.seq_paxos.snapshot(compact_idx, local_only);
        self.check(result)
            .unwrap_or(Err(CompactionErr::StorageFailed))
    }

    /// Call when the transport re-established the link to `pid`: messages may have been lost
    /// on it, so this server asks for a fresh synchronisation.
    pub fn reconnected(&mut self, pid: NodeId) {
        if self.storage_error.is_none() {
            self.seq_paxos.reconnected(pid);
            self.ble.reconnected(pid);
        }
    }

    /// Takes over leadership with a ballot above the current promise. Another server with a
    /// higher ballot may still win.
    pub fn try_become_leader(&mut self) {
        if self.storage_error.is_some() {
            return;
        }
        let promise = self.seq_paxos.promise();
        let own = self.ble.current_ballot();
        let ballot = Ballot {
            n: promise.n.max(own.n).saturating_add(1),
            ..own
        };
        self.ble.adopt_own_ballot(ballot);
        let result = self.seq_paxos.handle_leader(ballot);
        self.check(result);
    }

    /// Changes this server's leader priority; a higher priority wins among equal ballot numbers,
    /// so a change usually causes a re-election.
    pub fn set_priority(&mut self, p: u32) {
        self.ble.set_priority(p);
    }

    /// A picture of this server's state for dashboards.
    pub fn get_ui_states(&self) -> OmniPaxosStates {
        let heartbeats = self.ble.previous_replies().to_vec();
        let (role, _) = self.seq_paxos.role_and_phase();
        let mut accepted_indexes = Vec::new();
        let max_pid = self
            .seq_paxos
            .peers()
            .iter()
            .copied()
            .chain(std::iter::once(self.seq_paxos.pid()))
            .max()
            .unwrap_or(0);
        if role == Role::Leader && max_pid <= MAX_UI_PID {
            accepted_indexes = vec![0; max_pid as usize + 1];
            for (pid, idx) in self.seq_paxos.known_accepted_indexes() {
                accepted_indexes[pid as usize] = idx.unwrap_or(0);
            }
        }
        let promise = self.seq_paxos.promise();
        OmniPaxosStates {
            current_ballot: self.ble.current_ballot(),
            current_leader: (promise.pid != 0).then_some(promise.pid),
            decided_idx: self.get_decided_idx(),
            heartbeats: heartbeats.clone(),
            cluster_state: ClusterState {
                accepted_indexes,
                heartbeats,
            },
        }
    }

    /// The ballot Ballot Leader Election currently follows: the leader this server learnt of
    /// from heartbeats, which can be newer than the one it promised (see
    /// [`get_promise`](Self::get_promise)) while that leader's `Prepare` has not reached it, e.g.
    /// when the link to it is down. A runtime uses it to route requests to the real leader.
    pub fn ble_leader(&self) -> Ballot {
        self.ble.leader()
    }
}
