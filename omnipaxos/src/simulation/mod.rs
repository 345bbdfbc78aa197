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

mod invariants;
mod network;
mod rng;
mod storage;

pub use network::NetworkConfig;
pub use rng::SimRng;
pub use storage::{FaultMode, InjectedFault, SimStorage};

use crate::config::{ClusterConfig, OmniPaxosConfig, ServerConfig};
use crate::errors::propose::ProposeErr;
use crate::errors::ConfigError;
use crate::ids::NodeId;
use crate::messages::Message;
use crate::omni_paxos::OmniPaxos;
use crate::quorum::FlexibleQuorum;
use crate::reconfiguration::Handover;
use crate::storage::{Entry, Storage};
use invariants::InvariantChecker;
use network::Network;
use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

/// More deliveries than this in one step means the servers keep answering each other.
const MAX_DELIVERIES_PER_STEP: usize = 50_000;

/// How to set up a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// The configuration's id (1 unless simulating a later configuration).
    pub configuration_id: u32,
    /// The servers' pids.
    pub nodes: Vec<NodeId>,
    /// Settings every server gets (the pid is filled in per server).
    pub server_config: ServerConfig,
    /// Per-server leader priorities (default 0).
    pub priorities: BTreeMap<NodeId, u32>,
    /// Custom quorums, if any.
    pub flexible_quorum: Option<FlexibleQuorum>,
    /// The network's behaviour.
    pub network: NetworkConfig,
    /// How many recent events to keep for failure reports.
    pub trace_len: usize,
    /// Every this many steps the invariants are checked against the whole decided log of every
    /// server, not only what was decided since the last step (0: never; see
    /// [`Simulation::check_invariants_fully`]).
    pub full_check_every: u64,
}

impl SimConfig {
    /// Servers `nodes` on a reliable network, with `election_tick_timeout` 5 and
    /// `resend_message_tick_timeout` 20, so a step is a fraction of an election round.
    pub fn new(nodes: Vec<NodeId>, seed: u64) -> Self {
        Self {
            seed,
            configuration_id: 1,
            nodes,
            server_config: ServerConfig {
                election_tick_timeout: 5,
                resend_message_tick_timeout: 20,
                ..ServerConfig::default()
            },
            priorities: BTreeMap::new(),
            flexible_quorum: None,
            network: NetworkConfig::reliable(),
            trace_len: 300,
            full_check_every: 25,
        }
    }

    fn config_for(&self, pid: NodeId) -> OmniPaxosConfig {
        OmniPaxosConfig {
            cluster_config: ClusterConfig {
                configuration_id: self.configuration_id,
                nodes: self.nodes.clone(),
                flexible_quorum: self.flexible_quorum,
            },
            server_config: ServerConfig {
                pid,
                leader_priority: self.priorities.get(&pid).copied().unwrap_or(0),
                ..self.server_config.clone()
            },
        }
    }
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// The condition did not hold within the step budget.
    Timeout {
        /// Steps taken.
        steps: usize,
        /// The seed, to replay.
        seed: u64,
    },
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Timeout { steps, seed } => {
                write!(
                    f,
                    "condition not reached within {steps} steps (seed {seed})"
                )
            }
        }
    }
}

impl std::error::Error for SimError {}

/// The simulated servers' storage: a shared handle to the user's storage.
pub type SimServer<T, B> = OmniPaxos<T, SimStorage<B>>;

/// A cluster of servers on a simulated network. See the module docs.
pub struct Simulation<T: Entry + Eq + Hash, B: Storage<T>> {
    config: SimConfig,
    rng: SimRng,
    now: u64,
    servers: BTreeMap<NodeId, Option<SimServer<T, B>>>,
    storages: BTreeMap<NodeId, SimStorage<B>>,
    network: Network<T>,
    checker: InvariantChecker<T>,
    trace: VecDeque<String>,
    outgoing: Vec<Message<T>>,
    intercepts: Vec<Intercept<T>>,
    held: Vec<Message<T>>,
}

/// Which messages a test's rule applies to.
type MessageFilter<T> = Box<dyn Fn(&Message<T>) -> bool>;

/// A test's rule for the next messages that match it.
struct Intercept<T: Entry> {
    remaining: usize,
    matches: MessageFilter<T>,
    /// Whether the message also goes on to the network (a copy is held either way).
    deliver: bool,
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
            trace: VecDeque::new(),
            outgoing: Vec::new(),
            intercepts: Vec::new(),
            held: Vec::new(),
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
        self.config.config_for(pid).build(storage)
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

    /// Holds back the next `count` messages for which `matches` is true: they do not reach the
    /// network, and [`Simulation::take_held`] hands them to the test, to drop or to
    /// [`inject`](Simulation::inject) later (a message lost, or delayed without bound).
    pub fn hold(&mut self, count: usize, matches: impl Fn(&Message<T>) -> bool + 'static) {
        self.intercepts.push(Intercept {
            remaining: count,
            matches: Box::new(matches),
            deliver: false,
        });
    }

    /// Keeps a copy of the next `count` messages for which `matches` is true and sends them on
    /// as usual; [`Simulation::take_held`] returns the copies, to inject as late duplicates.
    pub fn copy(&mut self, count: usize, matches: impl Fn(&Message<T>) -> bool + 'static) {
        self.intercepts.push(Intercept {
            remaining: count,
            matches: Box::new(matches),
            deliver: true,
        });
    }

    /// Drops every rule set by [`Simulation::hold`] and [`Simulation::copy`].
    pub fn stop_intercepting(&mut self) {
        self.intercepts.clear();
    }

    /// The messages held back or copied so far, oldest first.
    pub fn take_held(&mut self) -> Vec<Message<T>> {
        std::mem::take(&mut self.held)
    }

    /// `Some(deliver)` if a rule takes `msg` (and counts it).
    fn intercept(&mut self, msg: &Message<T>) -> Option<bool> {
        let rule = self
            .intercepts
            .iter_mut()
            .find(|r| r.remaining > 0 && (r.matches)(msg))?;
        rule.remaining -= 1;
        let deliver = rule.deliver;
        self.intercepts.retain(|r| r.remaining > 0);
        Some(deliver)
    }

    /// Hands `msg` to its receiver directly, as if it came from the network (for bad-input
    /// tests). Dropped if the receiver is not live.
    pub fn inject(&mut self, msg: Message<T>) {
        self.record(format!("inject {msg}"));
        if let Some(Some(server)) = self.servers.get_mut(&msg.get_receiver()) {
            server.handle_incoming(msg);
        }
    }

    /// Crashes server `pid`: its in-memory state is lost, its storage is kept. Messages in
    /// flight to or from it are lost too, unless the network lets them survive crashes
    /// ([`NetworkConfig::in_flight_survives_crash`]): then they may reach it after a restart.
    pub fn crash(&mut self, pid: NodeId) {
        if let Some(slot) = self.servers.get_mut(&pid) {
            *slot = None;
            self.network.crashed(pid);
            self.record(format!("crash {pid}"));
        }
    }

    /// Restarts server `pid` from its storage and tells the others it reconnected.
    pub fn restart(&mut self, pid: NodeId) -> Result<(), ConfigError> {
        if !self.storages.contains_key(&pid) {
            return Ok(());
        }
        let server = self.build(pid)?;
        self.servers.insert(pid, Some(server));
        self.record(format!("restart {pid}"));
        self.notify_reconnected(pid);
        Ok(())
    }

    fn notify_reconnected(&mut self, pid: NodeId) {
        for (other, server) in self.servers.iter_mut() {
            if *other != pid {
                if let Some(server) = server {
                    server.reconnected(pid);
                }
            }
        }
    }

    /// Cuts the link from `from` to `to` (one direction).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.network.cut(from, to);
        self.record(format!("cut {from}->{to}"));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn disconnect(&mut self, a: NodeId, b: NodeId) {
        self.cut_link(a, b);
        self.cut_link(b, a);
    }

    /// Cuts every link between servers in different groups.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for (i, g) in groups.iter().enumerate() {
            for h in groups.iter().skip(i + 1) {
                for &a in g.iter() {
                    for &b in h.iter() {
                        self.disconnect(a, b);
                    }
                }
            }
        }
    }

    /// Isolates `pid` from everyone.
    pub fn isolate(&mut self, pid: NodeId) {
        for other in self.pids() {
            if other != pid {
                self.disconnect(pid, other);
            }
        }
    }

    /// Restores the link from `from` to `to`, and tells both ends they reconnected.
    pub fn heal_link(&mut self, from: NodeId, to: NodeId) {
        self.network.heal(from, to);
        self.record(format!("heal {from}->{to}"));
        for (a, b) in [(from, to), (to, from)] {
            if let Some(Some(server)) = self.servers.get_mut(&a) {
                server.reconnected(b);
            }
        }
    }

    /// Restores every link, and tells every live server its peers reconnected.
    pub fn heal_all(&mut self) {
        self.network.heal_all();
        self.record("heal all".to_string());
        let pids = self.pids();
        for pid in pids {
            self.notify_reconnected(pid);
        }
    }

    /// Drops every message in flight.
    pub fn drop_in_flight(&mut self) {
        self.network.clear();
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.network.in_flight_len()
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
        for server in self.servers.values_mut().flatten() {
            server.tick();
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
        let every = self.config.full_check_every;
        if every > 0 && self.now % every == 0 {
            self.check_invariants_fully()
        } else {
            self.check_invariants()
        }
    }

    fn collect_outgoing(&mut self) {
        let mut buffer = std::mem::take(&mut self.outgoing);
        for server in self.servers.values_mut().flatten() {
            server.take_outgoing_messages(&mut buffer);
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
