//! Runtime nodes on the simulator (feature `simulation`): whole nodes (the runtime's engine,
//! the core, storage) on the core simulator's network, driven by one seed, with the faults a
//! runtime meets: crashes and restarts from storage (a new incarnation), connections that break
//! and come back (what was in flight on them is lost, both ends hear of it), delays that mix
//! links. Links keep order and never duplicate, as the runtime's TCP connections do; the core's
//! own messages ride on them.
//!
//! Appends, linearizable reads and decided-entry subscriptions go through the engine exactly as
//! through a handle, and every outcome is checked against the decided logs
//! ([`RuntimeSimulation::check_outcomes`]): an `Ok(idx)` is the entry decided at `idx` on every
//! node, an error documented as "never decided" (`NoLeader`, `TooManyOutstanding`, `Propose`,
//! `Rejected`) is never decided, and no entry is decided twice, whatever its outcome (`InDoubt`
//! and `Timeout` included); a read point covers every append answered `Ok` before the read was
//! made; a subscriber receives the decided entries in order, none skipped, each the one decided
//! at its index.
//!
//! ```
//! use omnipaxos_runtime::simulation::RuntimeSimulation;
//! use omnipaxos_storage::memory_storage::MemoryStorage;
//!
//! let mut sim = RuntimeSimulation::new(vec![1, 2, 3], 7, |_| MemoryStorage::<u64>::default());
//! sim.run(50); // a leader is elected
//! let first = sim.append(1, 100);
//! sim.crash(2);
//! let second = sim.append(3, 101);
//! sim.run(100);
//! sim.restart(2);
//! sim.run(100);
//! assert!(sim.outcome(first).is_some_and(|o| o.is_ok()));
//! assert!(sim.outcome(second).is_some_and(|o| o.is_ok()));
//! sim.check_outcomes().unwrap();
//! ```

use crate::config::RuntimeConfig;
use crate::engine::appends::{AppendLimits, AppendTracker};
use crate::engine::clock::ClockStart;
use crate::engine::reads::{ReadPoint, ReadTracker};
use crate::engine::subscribers::{Cursor, DecidedEntry, History, Log, Sink};
use crate::engine::{CoreView, Micros, NodeView};
use crate::errors::AppendError;
use crate::errors::ReadError;
use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use omnipaxos::messages::Message;
use omnipaxos::simulation::{Network, NetworkConfig, Routed, SimRng, SimStorage};
use omnipaxos::storage::Storage;
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use std::collections::{BTreeMap, BTreeSet};

/// Microseconds per tick: the runtime's default tick period.
const TICK_MICROS: Micros = 10_000;

/// A message between two runtimes, on the simulated network.
#[derive(Clone, Debug)]
pub struct Envelope<T: RuntimeEntry> {
    from: NodeId,
    to: NodeId,
    msg: WireMessage<T>,
}

impl<T: RuntimeEntry> Routed for Envelope<T> {
    fn sender(&self) -> NodeId {
        self.from
    }
    fn receiver(&self) -> NodeId {
        self.to
    }
}

/// The number of an append made with [`RuntimeSimulation::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppendId(u64);

/// The number of a read made with [`RuntimeSimulation::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadId(u64);

/// The number of a subscription made with [`RuntimeSimulation::subscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

/// A `subscribe_decided` subscriber: the node it reads from, its cursor, what it received.
struct Subscription<T: RuntimeEntry> {
    pid: NodeId,
    cursor: Cursor,
    received: Vec<DecidedEntry<T>>,
    /// Until its node crashes (its channel goes with the node's memory).
    open: bool,
}

/// A subscriber's buffer in the simulation: it takes everything.
struct Received<'a, T: RuntimeEntry>(&'a mut Vec<DecidedEntry<T>>);

impl<T: RuntimeEntry> Sink<T> for Received<'_, T> {
    fn is_closed(&self) -> bool {
        false
    }
    fn room(&self) -> usize {
        usize::MAX
    }
    fn offer(&mut self, entry: DecidedEntry<T>) -> bool {
        self.0.push(entry);
        true
    }
}

/// A node's one log, as the subscriber feed sees it (the simulation does not reconfigure).
struct OneLog<'a, T: RuntimeEntry, B: Storage<T>>(&'a OmniPaxos<T, SimStorage<B>>);

impl<T: RuntimeEntry, B: Storage<T>> History<T> for OneLog<'_, T, B> {
    fn current(&self) -> u32 {
        self.0.get_config().cluster_config.configuration_id
    }
    fn awaits_handover(&self) -> bool {
        false
    }
    fn first(&self) -> u32 {
        self.current()
    }
    fn log(&self, config_id: u32) -> Option<Log<'_, T>> {
        (config_id == self.current()).then(|| Log::Instance {
            decided: self.0.get_decided_idx(),
            compacted: self.0.get_compacted_idx(),
            ended: false,
        })
    }
    fn read(&self, _config_id: u32, from: usize, to: usize) -> Option<Vec<LogEntry<T>>> {
        self.0.read_entries(from..to)
    }
    fn after(&self, _config_id: u32) -> u32 {
        self.current()
    }
}

struct SimNode<T: RuntimeEntry, B: Storage<T>> {
    op: OmniPaxos<T, SimStorage<B>>,
    appends: AppendTracker<T, AppendId>,
    /// When its core starts to count time, as in the runtime.
    clock: ClockStart,
    reads: ReadTracker<ReadId>,
}

/// A cluster of runtime nodes on a simulated network. See the module docs.
pub struct RuntimeSimulation<T: RuntimeEntry, B: Storage<T>> {
    cluster: ClusterConfig,
    server: ServerConfig,
    limits: AppendLimits,
    append_timeout: Micros,
    nodes: BTreeMap<NodeId, Option<SimNode<T, B>>>,
    storages: BTreeMap<NodeId, SimStorage<B>>,
    network: Network<Envelope<T>>,
    rng: SimRng,
    now: u64,
    /// Connections that are down, both directions listed.
    down: BTreeSet<(NodeId, NodeId)>,
    next_append: u64,
    appended: BTreeMap<AppendId, T>,
    outcomes: BTreeMap<AppendId, Result<usize, AppendError<T>>>,
    next_read: u64,
    /// Each read's node and the read point it must reach: past every append answered `Ok`
    /// before the read was made.
    reads: BTreeMap<ReadId, (NodeId, usize)>,
    read_outcomes: BTreeMap<ReadId, Result<ReadPoint, ReadError>>,
    next_subscription: u64,
    subscriptions: BTreeMap<SubscriptionId, Subscription<T>>,
    /// Broken promises seen on the way (an append or a read answered twice).
    violations: Vec<String>,
}

impl<T, B> RuntimeSimulation<T, B>
where
    T: RuntimeEntry + PartialEq,
    B: Storage<T>,
{
    /// Nodes `nodes` with the runtime's defaults (`RuntimeConfig::default()`, 10 ms ticks) and
    /// an election round of 5 ticks, each on the storage `storage_for` makes for it. Links
    /// delay by 0 to 2 ticks.
    pub fn new(nodes: Vec<NodeId>, seed: u64, mut storage_for: impl FnMut(NodeId) -> B) -> Self {
        let runtime = RuntimeConfig::default();
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut sim = Self {
            cluster: ClusterConfig {
                configuration_id: 1,
                nodes: nodes.clone(),
                ..Default::default()
            },
            server: ServerConfig {
                election_tick_timeout: 5,
                resend_message_tick_timeout: 20,
                ..Default::default()
            },
            limits: AppendLimits {
                max_pending: runtime.max_pending_appends,
                leader_unreachable: micros(runtime.leader_unreachable_timeout),
                relay_timeout: micros(runtime.append_notify_timeout),
                batch_hold: micros(runtime.tick_period),
            },
            append_timeout: micros(runtime.append_notify_timeout),
            nodes: BTreeMap::new(),
            storages: nodes
                .iter()
                .map(|&pid| (pid, SimStorage::new(storage_for(pid))))
                .collect(),
            network: Network::new(NetworkConfig {
                max_delay: 2,
                in_order_links: true,
                ..NetworkConfig::reliable()
            }),
            rng: SimRng::new(seed),
            now: 0,
            down: BTreeSet::new(),
            next_append: 0,
            appended: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            next_read: 0,
            reads: BTreeMap::new(),
            read_outcomes: BTreeMap::new(),
            next_subscription: 0,
            subscriptions: BTreeMap::new(),
            violations: Vec::new(),
        };
        for pid in nodes {
            sim.start(pid);
        }
        sim
    }

    fn micros(&self) -> Micros {
        self.now * TICK_MICROS
    }

    /// Builds node `pid` from its storage with a new incarnation, and connects it to every
    /// live node whose connection is not down.
    fn start(&mut self, pid: NodeId) {
        let server = ServerConfig {
            pid,
            ..self.server.clone()
        };
        let storage = self.storages[&pid].clone();
        let Ok(op) = self.cluster.clone().build_for_server(server, storage) else {
            return;
        };
        let incarnation = self.rng.next_u64();
        let first_req = self.rng.next_u64();
        let appends = AppendTracker::new(incarnation, first_req, self.limits);
        let node = SimNode {
            op,
            appends,
            clock: ClockStart::default(),
            reads: ReadTracker::default(),
        };
        self.nodes.insert(pid, Some(node));
        for peer in self.live() {
            if peer != pid {
                self.connected(pid, peer);
            }
        }
    }

    /// The live nodes.
    pub fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// The connection between `a` and `b` came up: each runtime says hello (its incarnation)
    /// and its core learns the peer reconnected.
    fn connected(&mut self, a: NodeId, b: NodeId) {
        if self.down.contains(&(a, b)) {
            return;
        }
        for (me, peer) in [(a, b), (b, a)] {
            let Some(Some(node)) = self.nodes.get_mut(&me) else {
                continue;
            };
            node.op.reconnected(peer);
            let hello = WireMessage::Hello {
                incarnation: node.appends.incarnation(),
            };
            let env = Envelope {
                from: me,
                to: peer,
                msg: hello,
            };
            self.network.send(env, self.now, &mut self.rng);
        }
    }

    /// The connection between `a` and `b` broke: what was in flight on it is lost, and both
    /// runtimes give up on answers that were to come over it.
    fn broke(&mut self, a: NodeId, b: NodeId) {
        let now = self.micros();
        for (me, peer) in [(a, b), (b, a)] {
            self.network.drop_link(me, peer);
            if let Some(Some(node)) = self.nodes.get_mut(&me) {
                node.appends.abandon_sent_to(peer, now);
            }
        }
        self.collect(a);
        self.collect(b);
    }

    /// Crashes node `pid`: its memory (and what waits in it) is lost, its storage kept.
    pub fn crash(&mut self, pid: NodeId) {
        if let Some(slot) = self.nodes.get_mut(&pid) {
            if slot.take().is_some() {
                for peer in self.live() {
                    self.broke(pid, peer);
                }
                for sub in self.subscriptions.values_mut() {
                    sub.open &= sub.pid != pid;
                }
            }
        }
    }

    /// Restarts node `pid` from its storage.
    pub fn restart(&mut self, pid: NodeId) {
        if matches!(self.nodes.get(&pid), Some(None)) {
            self.start(pid);
        }
    }

    /// Breaks the connection between `a` and `b` until [`reconnect`](Self::reconnect).
    pub fn disconnect(&mut self, a: NodeId, b: NodeId) {
        if self.down.insert((a, b)) {
            self.down.insert((b, a));
            self.broke(a, b);
        }
    }

    /// Brings the connection between `a` and `b` back.
    pub fn reconnect(&mut self, a: NodeId, b: NodeId) {
        if self.down.remove(&(a, b)) {
            self.down.remove(&(b, a));
            self.connected(a, b);
        }
    }

    /// Brings every connection back.
    pub fn reconnect_all(&mut self) {
        let down: Vec<(NodeId, NodeId)> = self.down.iter().copied().collect();
        for (a, b) in down {
            self.reconnect(a, b);
        }
    }

    /// Appends `entry` on node `pid`, as a handle's `append_notify` would; its outcome comes in
    /// [`outcome`](Self::outcome). On a node that is down the append never reaches it: it gets
    /// no outcome and is never decided.
    pub fn append(&mut self, pid: NodeId, entry: T) -> AppendId {
        self.next_append += 1;
        let id = AppendId(self.next_append);
        self.appended.insert(id, entry.clone());
        let now = self.micros();
        let deadline = now + self.append_timeout;
        if let Some(Some(node)) = self.nodes.get_mut(&pid) {
            node.appends.submit(entry, Some(id), now, deadline);
            self.pass(pid);
        }
        id
    }

    /// A linearizable read on node `pid`, as a handle's `read_linearizable_at` would; its
    /// outcome comes in [`read_outcome`](Self::read_outcome). A read point it answers must
    /// cover every append answered `Ok` before the read was made ([`check_outcomes`]
    /// (Self::check_outcomes)).
    pub fn read(&mut self, pid: NodeId) -> ReadId {
        self.next_read += 1;
        let id = ReadId(self.next_read);
        let covers = self
            .outcomes
            .values()
            .filter_map(|o| o.as_ref().ok().map(|idx| idx + 1))
            .max()
            .unwrap_or(0);
        self.reads.insert(id, (pid, covers));
        let deadline = self.micros() + self.append_timeout;
        if let Some(Some(node)) = self.nodes.get_mut(&pid) {
            node.reads.submit(id, deadline);
            self.pass(pid);
        }
        id
    }

    /// The outcome of read `id`, once it has one.
    pub fn read_outcome(&self, id: ReadId) -> Option<&Result<ReadPoint, ReadError>> {
        self.read_outcomes.get(&id)
    }

    /// Subscribes to the entries decided on node `pid` from index `from`, as a handle's
    /// `subscribe_decided` would; they arrive in [`received`](Self::received). The
    /// subscription ends when the node crashes. On a node that is down, nothing arrives.
    pub fn subscribe(&mut self, pid: NodeId, from: usize) -> SubscriptionId {
        self.next_subscription += 1;
        let id = SubscriptionId(self.next_subscription);
        let (cursor, open) = match self.nodes.get(&pid) {
            Some(Some(node)) => (Cursor::new(&OneLog(&node.op), from), true),
            _ => (
                Cursor {
                    config_id: None,
                    next: from,
                },
                false,
            ),
        };
        let sub = Subscription {
            pid,
            cursor,
            received: Vec::new(),
            open,
        };
        self.subscriptions.insert(id, sub);
        self.pass(pid);
        id
    }

    /// What subscription `id` received so far, in order.
    pub fn received(&self, id: SubscriptionId) -> &[DecidedEntry<T>] {
        self.subscriptions
            .get(&id)
            .map_or(&[], |s| s.received.as_slice())
    }

    /// The outcome of append `id`, once it has one.
    pub fn outcome(&self, id: AppendId) -> Option<&Result<usize, AppendError<T>>> {
        self.outcomes.get(&id)
    }

    /// Appends without an outcome yet.
    pub fn unresolved(&self) -> usize {
        self.appended.len() - self.outcomes.len()
    }

    /// The core of node `pid`, if it is up.
    pub fn core(&self, pid: NodeId) -> Option<&OmniPaxos<T, SimStorage<B>>> {
        self.nodes.get(&pid)?.as_ref().map(|n| &n.op)
    }

    /// One tick: every live node ticks (its core, its deadlines), then every message due is
    /// delivered.
    pub fn step(&mut self) {
        self.now += 1;
        let now = self.micros();
        for pid in self.live() {
            let up = self.up(pid);
            if let Some(Some(node)) = self.nodes.get_mut(&pid) {
                let config = node.op.get_config();
                let ticks = node.clock.tick(
                    pid,
                    &config.cluster_config.nodes,
                    |p| up.contains(&p),
                    config.server_config.election_tick_timeout,
                );
                if ticks {
                    node.op.tick();
                }
                node.appends.expire(now);
                node.reads.tick(now);
            }
            self.pass(pid);
        }
        for env in self.network.take_due(self.now, &mut self.rng) {
            self.deliver(env);
        }
    }

    /// Runs `steps` steps.
    pub fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }

    fn deliver(&mut self, env: Envelope<T>) {
        let now = self.micros();
        let to = env.to;
        let up = self.up(to);
        let Some(Some(node)) = self.nodes.get_mut(&to) else {
            return;
        };
        let view = CoreView {
            me: to,
            op: &mut node.op,
            connected: |p| up.contains(&p),
            follows: false,
            retired: false,
        };
        match env.msg {
            WireMessage::Protocol { config_id, msg } => {
                if config_id == view.config_id() && msg.get_sender() == env.from {
                    view.op.handle_incoming(msg);
                }
            }
            WireMessage::Append {
                incarnation,
                ballot,
                entries,
            } => node
                .appends
                .on_remote_append(&view, env.from, incarnation, ballot, entries, now),
            WireMessage::AppendOutcome {
                incarnation,
                outcomes,
            } => node
                .appends
                .on_outcomes(&view, env.from, incarnation, outcomes, now),
            WireMessage::Hello { incarnation } => {
                node.appends.note_incarnation(env.from, incarnation, now)
            }
            WireMessage::HandoverRequest { .. } | WireMessage::Handover { .. } => {}
        }
        self.pass(to);
    }

    /// The peers node `pid` has a working connection to, and whose runtime said hello.
    fn up(&self, pid: NodeId) -> BTreeSet<NodeId> {
        self.live()
            .into_iter()
            .filter(|&p| p != pid && !self.down.contains(&(pid, p)))
            .collect()
    }

    /// The end of a node's pass, as the runtime's: place or send appends, send the core's
    /// messages, settle what was decided, hand out the effects.
    fn pass(&mut self, pid: NodeId) {
        let now = self.micros();
        let up = self.up(pid);
        let Some(Some(node)) = self.nodes.get_mut(&pid) else {
            return;
        };
        let mut view = CoreView {
            me: pid,
            op: &mut node.op,
            connected: |p| up.contains(&p),
            follows: false,
            retired: false,
        };
        node.appends.dispatch(&mut view, now);
        let op = &mut *view.op;
        node.reads.ask(|ctx| op.read_index(ctx).is_ok());
        let config_id = view.config_id();
        let mut out: Vec<Message<T>> = Vec::new();
        view.op.take_outgoing_messages(&mut out);
        node.appends.observe(&view, now);
        let (mut states, mut failures) = (Vec::new(), Vec::new());
        view.op.take_read_states(&mut states);
        view.op.take_read_failures(&mut failures);
        let decided = view.decided_idx();
        node.reads.settle(states, failures, decided, config_id);
        let mut envelopes: Vec<Envelope<T>> = out
            .into_iter()
            .map(|msg| Envelope {
                from: pid,
                to: msg.get_receiver(),
                msg: WireMessage::Protocol { config_id, msg },
            })
            .collect();
        envelopes.extend(
            node.appends
                .take_messages()
                .into_iter()
                .map(|(to, msg)| Envelope { from: pid, to, msg }),
        );
        for env in envelopes {
            if !self.down.contains(&(env.from, env.to)) {
                self.network.send(env, self.now, &mut self.rng);
            }
        }
        self.collect(pid);
    }

    /// Moves node `pid`'s answers into the outcomes.
    fn collect(&mut self, pid: NodeId) {
        let Some(Some(node)) = self.nodes.get_mut(&pid) else {
            return;
        };
        for answer in node.appends.take_answers() {
            if self.outcomes.insert(answer.reply, answer.result).is_some() {
                self.violations
                    .push(format!("{:?} answered twice", answer.reply));
            }
        }
        for (id, result) in node.reads.take_answers() {
            if self.read_outcomes.insert(id, result).is_some() {
                self.violations.push(format!("{id:?} answered twice"));
            }
        }
        let history = OneLog(&node.op);
        let mut failed = None;
        for sub in self.subscriptions.values_mut() {
            if sub.open && sub.pid == pid {
                if let Err(e) = sub.cursor.feed(&history, &mut Received(&mut sub.received)) {
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            // The runtime stops a node whose storage cannot give back decided entries.
            self.violations.push(format!("node {pid} stopped: {e}"));
            self.crash(pid);
        }
    }

    /// The longest decided log among all nodes' storage (crashed nodes' too), after checking
    /// that they agree.
    fn decided_log(&self) -> Result<Vec<T>, String> {
        let mut longest: Vec<T> = Vec::new();
        for (pid, storage) in &self.storages {
            let read = storage.with_store(|s| {
                let decided = s.get_decided_idx()?;
                s.get_entries(0, decided)
            });
            let entries = read.map_err(|e| format!("node {pid}'s storage: {e}"))?;
            let common = longest.len().min(entries.len());
            if longest[..common] != entries[..common] {
                return Err(format!("node {pid}'s decided log differs from another's"));
            }
            if entries.len() > longest.len() {
                longest = entries;
            }
        }
        Ok(longest)
    }

    /// Checks every outcome against the decided logs (see the module docs). Entries must be
    /// distinct for the check to tell them apart.
    pub fn check_outcomes(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        let log = self.decided_log()?;
        for (id, entry) in &self.appended {
            let decided_at: Vec<usize> = log
                .iter()
                .enumerate()
                .filter(|(_, e)| *e == entry)
                .map(|(i, _)| i)
                .collect();
            if decided_at.len() > 1 {
                return Err(format!("{id:?} decided twice, at {decided_at:?}"));
            }
            match self.outcomes.get(id) {
                Some(Ok(idx)) if decided_at != [*idx] => {
                    return Err(format!(
                        "{id:?} answered Ok({idx}) but decided at {decided_at:?}"
                    ));
                }
                Some(Err(e)) if never_decided(e) && !decided_at.is_empty() => {
                    return Err(format!(
                        "{id:?} answered {e:?} (never decided) but decided at {decided_at:?}"
                    ));
                }
                _ => {}
            }
        }
        for (id, result) in &self.read_outcomes {
            let Ok(point) = result else { continue };
            let covers = self.reads.get(id).map_or(0, |(_, c)| *c);
            if point.idx < covers || point.idx > log.len() {
                return Err(format!(
                    "{id:?} answered {point:?}, but appends answered Ok before it reach {covers} \
                     and {} entries are decided",
                    log.len()
                ));
            }
        }
        for (id, sub) in &self.subscriptions {
            let mut next = None;
            for got in &sub.received {
                if next.is_some_and(|n| got.idx != n) {
                    return Err(format!("{id:?} skipped from {next:?} to {}", got.idx));
                }
                // After a compacted prefix the next index is the compacted one.
                next = matches!(got.entry, LogEntry::Decided(_)).then_some(got.idx + 1);
                if let LogEntry::Decided(entry) = &got.entry {
                    if log.get(got.idx) != Some(entry) {
                        return Err(format!(
                            "{id:?} received an entry at {} that is not the one decided there",
                            got.idx
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The errors after which the entry is never decided (`docs/runtime.md`).
fn never_decided<T: RuntimeEntry>(e: &AppendError<T>) -> bool {
    matches!(
        e,
        AppendError::NoLeader
            | AppendError::TooManyOutstanding
            | AppendError::Propose(_)
            | AppendError::Rejected { .. }
    )
}
