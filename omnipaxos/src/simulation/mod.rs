//! A deterministic simulator of an OmniPaxos cluster (feature `simulation`).
//!
//! All servers run in one thread. One [`Simulation::step`] is one tick of every live server
//! followed by the delivery of every message due, repeated until the network is quiet for that
//! tick. The network can lose, duplicate, delay and reorder messages ([`NetworkConfig`]) and cut
//! links in either direction; servers can crash and restart from their storage, and their
//! storage can be told to fail. All randomness comes from one seed, so a seed replays a run
//! exactly. After every step the safety invariants (agreement, validity, stability, one leader
//! per ballot, StopSign finality, safe compaction) are checked; a violation panics with the
//! seed and the last events.
//!
//! ```
//! use omnipaxos::simulation::{SimConfig, Simulation};
//! use omnipaxos_storage::memory_storage::MemoryStorage;
//!
//! let mut sim = Simulation::<u64, _>::new(SimConfig::new(vec![1, 2, 3], 42), |_| {
//!     MemoryStorage::default()
//! });
//! let leader = sim.run_until_leader(100).expect("a leader within 100 steps");
//! sim.append(leader, 7).unwrap();
//! sim.run_until(100, |s| s.all_decided(1)).expect("decided everywhere");
//! ```

mod config;
mod faults;
mod invariants;
mod network;
mod reads;
mod rng;
mod storage;

pub use config::{SimConfig, SimError};

pub use network::{Network, NetworkConfig, Routed};
pub use reads::ReadOutcomes;
pub use rng::SimRng;
pub use storage::{FaultMode, InjectedFault, SimStorage};

use crate::errors::propose::ProposeErr;
use crate::errors::ConfigError;
use crate::ids::NodeId;
use crate::messages::Message;
use crate::omni_paxos::OmniPaxos;
use crate::reconfiguration::Handover;
use crate::storage::{Entry, Storage};
use faults::Intercept;
use invariants::InvariantChecker;
use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

/// More deliveries than this in one step means the servers keep answering each other.
const MAX_DELIVERIES_PER_STEP: usize = 50_000;

/// The simulated servers' storage: a shared handle to the user's storage.
pub type SimServer<T, B> = OmniPaxos<T, SimStorage<B>>;

/// A cluster of servers on a simulated network. See the module docs.
pub struct Simulation<T: Entry + Eq + Hash, B: Storage<T>> {
    config: SimConfig,
    rng: SimRng,
    now: u64,
    servers: BTreeMap<NodeId, Option<SimServer<T, B>>>,
    storages: BTreeMap<NodeId, SimStorage<B>>,
    network: Network<Message<T>>,
    checker: InvariantChecker<T>,
    reads: reads::ReadLedger,
    trace: VecDeque<String>,
    outgoing: Vec<Message<T>>,
    intercepts: Vec<Intercept<T>>,
    held: Vec<Message<T>>,
    /// Leaders that crashed between sending and writing, restarted at the next step (after
    /// what they sent was delivered).
    restart_next_step: Vec<NodeId>,
}

impl<T: Entry + Eq + Hash, B: Storage<T>> Simulation<T, B> {
    /// Builds one server per pid, each on the storage `storage_for(pid)` returns.
    ///
    /// # Panics
    /// If `config` does not make valid server configurations (a test setup error).
    pub fn new(config: SimConfig, mut storage_for: impl FnMut(NodeId) -> B) -> Self {
        let mut sim = Self {
            rng: SimRng::new(config.seed),
            now: 0,
            servers: BTreeMap::new(),
            storages: BTreeMap::new(),
            network: Network::new(config.network),
            checker: InvariantChecker::new(),
            reads: reads::ReadLedger::default(),
            trace: VecDeque::new(),
            outgoing: Vec::new(),
            intercepts: Vec::new(),
            held: Vec::new(),
            restart_next_step: Vec::new(),
            config,
        };
        for pid in sim.config.nodes.clone() {
            sim.storages.insert(pid, SimStorage::new(storage_for(pid)));
            let server = sim
                .build(pid)
                .unwrap_or_else(|e| panic!("server {pid}: {e}"));
            sim.servers.insert(pid, Some(server));
        }
        sim
    }

    fn build(&self, pid: NodeId) -> Result<SimServer<T, B>, ConfigError> {
        let storage = self.storages[&pid].clone();
        let mut server = self.config.config_for(pid).build(storage)?;
        if self.config.read_lease.is_some() {
            server.set_read_lease(self.config.read_lease);
        }
        Ok(server)
    }

    /// The seed this simulation runs with.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Steps taken so far.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The random number generator, for workloads that should follow the seed.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// The pids of all servers, live or crashed.
    pub fn pids(&self) -> Vec<NodeId> {
        self.servers.keys().copied().collect()
    }

    /// The pids of the live servers.
    pub fn live_pids(&self) -> Vec<NodeId> {
        self.servers
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Server `pid`, if it is live.
    pub fn server(&self, pid: NodeId) -> Option<&SimServer<T, B>> {
        self.servers.get(&pid)?.as_ref()
    }

    /// Server `pid`, if it is live. Proposals made through it bypass the validity bookkeeping:
    /// use [`Simulation::append`] for entries.
    pub fn server_mut(&mut self, pid: NodeId) -> Option<&mut SimServer<T, B>> {
        self.servers.get_mut(&pid)?.as_mut()
    }

    /// The storage handle of server `pid` (kept across crashes).
    pub fn storage(&self, pid: NodeId) -> Option<&SimStorage<B>> {
        self.storages.get(&pid)
    }

    /// Changes the network's behaviour from now on.
    pub fn set_network(&mut self, network: NetworkConfig) {
        self.network.config = network;
    }

    /// Sets [`SimConfig::crash_before_write`] from now on (with `pipelined_writes`).
    pub fn set_crash_before_write(&mut self, chance: f64) {
        self.config.crash_before_write = chance;
    }

    /// Appends `entry` on server `pid` and records it as proposed.
    pub fn append(&mut self, pid: NodeId, entry: T) -> Result<(), ProposeErr<T>> {
        let Some(server) = self.servers.get_mut(&pid).and_then(Option::as_mut) else {
            return Err(ProposeErr::PendingReconfigEntry(entry));
        };
        self.checker.record_proposal(entry.clone());
        let result = server.append(entry);
        self.record(format!(
            "append on {pid}: {}",
            if result.is_ok() { "ok" } else { "refused" }
        ));
        result
    }

    fn record(&mut self, event: String) {
        if self.config.trace_len == 0 {
            return;
        }
        if self.trace.len() == self.config.trace_len {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{}] {event}", self.now));
    }

    /// The last events (messages delivered, faults), oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    /// One step: every live server ticks, then messages are delivered until none is due.
    /// Checks the invariants afterwards.
    ///
    /// # Panics
    /// On an invariant violation, with the seed and the last events.
    pub fn step(&mut self) {
        if let Err(violation) = self.try_step() {
            panic!("{}", self.report(&violation));
        }
    }

    /// Like [`Simulation::step`], but returns a violation instead of panicking.
    pub fn try_step(&mut self) -> Result<(), String> {
        self.now += 1;
        for pid in std::mem::take(&mut self.restart_next_step) {
            if matches!(self.servers.get(&pid), Some(None)) {
                self.restart(pid).map_err(|e| e.to_string())?;
            }
        }
        for (pid, server) in self.servers.iter_mut() {
            let slow = self.config.slow_servers.get(pid).copied().unwrap_or(0);
            if slow > 1 && self.now % slow == 0 {
                continue; // this server's clock runs slow
            }
            if let Some(server) = server {
                server.tick();
            }
        }
        // Deliveries trigger replies; with zero delays they are due at once. The bounds catch
        // a protocol bug that keeps answering (a message storm) instead of exhausting memory.
        let mut delivered = 0usize;
        for _ in 0..1000 {
            self.collect_outgoing();
            let due = self.network.take_due(self.now, &mut self.rng);
            if due.is_empty() {
                break;
            }
            delivered += due.len();
            if delivered > MAX_DELIVERIES_PER_STEP
                || self.network.in_flight_len() > MAX_DELIVERIES_PER_STEP
            {
                return Err(format!(
                    "message storm: {delivered} messages delivered in one step, {} in flight",
                    self.network.in_flight_len()
                ));
            }
            for msg in due {
                self.deliver(msg);
            }
        }
        self.check_reads()?;
        let every = self.config.full_check_every;
        if every > 0 && self.now % every == 0 {
            self.check_invariants_fully()
        } else {
            self.check_invariants()
        }
    }

    fn collect_outgoing(&mut self) {
        let mut buffer = std::mem::take(&mut self.outgoing);
        let mut crashed_before_write = Vec::new();
        for (pid, server) in self.servers.iter_mut() {
            let Some(server) = server else { continue };
            if !self.config.pipelined_writes {
                server.take_outgoing_messages(&mut buffer);
                continue;
            }
            let crash = self.config.crash_before_write > 0.0
                && self.rng.chance(self.config.crash_before_write);
            let storage = &self.storages[pid];
            let mut early = Vec::new();
            let mut rest = Vec::new();
            server.take_outgoing_messages_pipelined(&mut rest, |sent| {
                early.append(sent);
                if crash {
                    // The leader's own write fails: as if it crashed between sending and
                    // writing. It is crashed and restarted below.
                    storage.set_fault(FaultMode::FailWrites);
                }
            });
            if crash && !early.is_empty() {
                crashed_before_write.push(*pid);
            }
            buffer.append(&mut early);
            buffer.append(&mut rest);
        }
        for msg in buffer.drain(..) {
            if let Some(deliver) = self.intercept(&msg) {
                self.held.push(msg.clone());
                self.record(format!("held {msg}"));
                if !deliver {
                    continue;
                }
            }
            self.network.send(msg, self.now, &mut self.rng);
        }
        self.outgoing = buffer;
        for pid in crashed_before_write {
            self.record(format!("{pid} crashes after sending, before writing"));
            self.storages[&pid].set_fault(FaultMode::Healthy);
            self.crash(pid);
            self.restart_next_step.push(pid);
        }
    }

    fn deliver(&mut self, msg: Message<T>) {
        if let Some(Some(server)) = self.servers.get_mut(&msg.get_receiver()) {
            if self.config.trace_len > 0 {
                let line = msg.to_string();
                server.handle_incoming(msg);
                self.record(line);
            } else {
                server.handle_incoming(msg);
            }
        }
    }

    /// Checks every invariant on every live server.
    pub fn check_invariants(&mut self) -> Result<(), String> {
        for (pid, server) in &self.servers {
            if let Some(server) = server {
                self.checker.check_server(*pid, server)?;
            }
        }
        Ok(())
    }

    /// Checks every invariant on every live server, reading each one's whole decided log again.
    /// Run it at the end of a test: a decided entry rewritten below what the per-step checks
    /// had read shows up here.
    pub fn check_invariants_fully(&mut self) -> Result<(), String> {
        for (pid, server) in &self.servers {
            if let Some(server) = server {
                self.checker.check_server_fully(*pid, server)?;
            }
        }
        Ok(())
    }

    /// Like [`Simulation::check_invariants_fully`], but panics with the seed and the last
    /// events on a violation.
    pub fn assert_invariants_fully(&mut self) {
        if let Err(violation) = self.check_invariants_fully() {
            panic!("{}", self.report(&violation));
        }
    }

    fn report(&self, violation: &str) -> String {
        let mut out = format!(
            "invariant violated at step {} (seed {}): {violation}\nlast events:\n",
            self.now, self.config.seed
        );
        for line in &self.trace {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Runs `steps` steps.
    pub fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Steps until `done` holds (checked before each step), at most `max_steps` steps. Returns
    /// the number of steps taken.
    pub fn run_until(
        &mut self,
        max_steps: usize,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<usize, SimError> {
        for steps in 0..=max_steps {
            if done(self) {
                return Ok(steps);
            }
            if steps < max_steps {
                self.step();
            }
        }
        Err(SimError::Timeout {
            steps: max_steps,
            seed: self.config.seed,
        })
    }

    /// Steps until some live server leads in the accept phase and every live server that can
    /// hear it agrees; returns its pid.
    pub fn run_until_leader(&mut self, max_steps: usize) -> Result<NodeId, SimError> {
        self.run_until(max_steps, |s| s.leader().is_some())?;
        Ok(self.leader().expect("checked by run_until"))
    }

    /// Steps until one server leads in the accept phase and every live server follows it in
    /// the accept phase; returns its pid. Use it before appends that must not race an election.
    pub fn run_until_stable_leader(&mut self, max_steps: usize) -> Result<NodeId, SimError> {
        self.run_until(max_steps, |s| s.stable_leader().is_some())?;
        Ok(self.stable_leader().expect("checked by run_until"))
    }

    /// The leader every live server follows in the accept phase, if there is one.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let leader = self.leader()?;
        self.servers
            .values()
            .flatten()
            .all(|s| s.get_current_leader() == Some((leader, true)))
            .then_some(leader)
    }

    /// The live server that leads in the accept phase with the highest ballot, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.servers
            .iter()
            .filter_map(|(pid, s)| s.as_ref().map(|s| (*pid, s)))
            .filter(|(pid, s)| s.get_current_leader() == Some((*pid, true)))
            .max_by_key(|(_, s)| s.get_promise())
            .map(|(pid, _)| pid)
    }

    /// Whether every live server has decided at least `idx` entries.
    pub fn all_decided(&self, idx: usize) -> bool {
        self.servers
            .values()
            .flatten()
            .all(|s| s.get_decided_idx() >= idx)
    }

    /// Whether the servers `pids` (those live) have decided at least `idx` entries.
    pub fn decided_on(&self, pids: &[NodeId], idx: usize) -> bool {
        pids.iter()
            .filter_map(|p| self.server(*p))
            .all(|s| s.get_decided_idx() >= idx)
    }

    /// Once this configuration ended (a live server decided its StopSign): a simulation of the
    /// next configuration, with the same settings, every server on fresh storage from
    /// `storage_for`, together with the [`Handover`] of this one, from which your test builds
    /// the application state of every server of the next configuration (a server that joins
    /// has nothing else). `None` while no live server has decided the StopSign.
    ///
    /// # Panics
    /// If the next configuration cannot be built (it was validated when proposed).
    pub fn next_configuration(
        &self,
        storage_for: impl FnMut(NodeId) -> B,
    ) -> Option<(Simulation<T, B>, Handover<T>)> {
        let handover = self.servers.values().flatten().find_map(|s| s.handover())?;
        let next = handover.next_config();
        let mut config = self.config.clone();
        config.configuration_id = next.configuration_id;
        config.nodes = next.nodes.clone();
        config.flexible_quorum = next.flexible_quorum;
        config.seed = self
            .config
            .seed
            .wrapping_add(u64::from(next.configuration_id));
        Some((Simulation::new(config, storage_for), handover))
    }

    /// The decided log as far as any server decided it (`None` where only compacted).
    pub fn chosen(&self) -> &[Option<T>] {
        self.checker.chosen()
    }
}
