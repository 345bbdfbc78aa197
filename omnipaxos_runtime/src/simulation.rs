//! Runtime nodes on the simulator (feature `simulation`): whole nodes (the runtime's engine,
//! the core, storage) on the core simulator's network, driven by one seed, with the faults a
//! runtime meets: crashes and restarts from storage (a new incarnation), connections that break
//! and come back (what was in flight on them is lost, both ends hear of it), delays that mix
//! links. Links keep order and never duplicate, as the runtime's TCP connections do; the core's
//! own messages ride on them.
//!
//! Appends, linearizable reads, decided-entry subscriptions and reconfigurations go through the
//! engine exactly as through a handle (a node moves to the next configuration by itself, keeps
//! the ended ones running for laggards, or retires), and every outcome is checked against the
//! decided logs of every configuration
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
use crate::engine::ended::EndedConfigs;
use crate::engine::reads::{ReadPoint, ReadTracker};
use crate::engine::reconfigure::{move_on, next_instance, Reconfigurer};
use crate::engine::subscribers::{Cursor, DecidedEntry, NodeLogs, Sink};
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

struct SimNode<T: RuntimeEntry, B: Storage<T>> {
    /// The configuration it runs.
    op: OmniPaxos<T, SimStorage<B>>,
    /// The configurations it ended, running (sealed) for laggards.
    ended: EndedConfigs<T, SimStorage<B>>,
    chain: Reconfigurer<T>,
    appends: AppendTracker<T, AppendId>,
    /// When its core starts to count time, as in the runtime.
    clock: ClockStart,
    reads: ReadTracker<ReadId>,
}

impl<T: RuntimeEntry, B: Storage<T>> SimNode<T, B> {
    /// Its logs, as the subscriber feed reads them.
    fn logs(&self) -> NodeLogs<'_, T, SimStorage<B>> {
        NodeLogs {
            current: &self.op,
            ended: self.ended.iter().collect(),
            joined: None,
            awaits_handover: false,
        }
    }
}

/// A cluster of runtime nodes on a simulated network. See the module docs.
pub struct RuntimeSimulation<T: RuntimeEntry, B: Storage<T>> {
    cluster: ClusterConfig,
    server: ServerConfig,
    limits: AppendLimits,
    append_timeout: Micros,
    nodes: BTreeMap<NodeId, Option<SimNode<T, B>>>,
    /// Every node's storage of every configuration it ran.
    storages: BTreeMap<(NodeId, u32), SimStorage<B>>,
    storage_for: Box<dyn FnMut(NodeId) -> B>,
    network: Network<Envelope<T>>,
    rng: SimRng,
    now: u64,
    /// Connections that are down, both directions listed.
    down: BTreeSet<(NodeId, NodeId)>,
    next_append: u64,
    appended: BTreeMap<AppendId, T>,
    outcomes: BTreeMap<AppendId, Result<usize, AppendError<T>>>,
    next_read: u64,
    /// Appends answered `Ok`, in the order of their answers.
    acknowledged: Vec<AppendId>,
    /// How many appends were acknowledged when each read was made: its read point must cover
    /// them.
    reads: BTreeMap<ReadId, usize>,
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
    /// an election round of 5 ticks, each on the storage `storage_for` makes for it (once per
    /// configuration the node runs). Links delay by 0 to 2 ticks.
    pub fn new(
        nodes: Vec<NodeId>,
        seed: u64,
        mut storage_for: impl FnMut(NodeId) -> B + 'static,
    ) -> Self {
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
                .map(|&pid| ((pid, 1), SimStorage::new(storage_for(pid))))
                .collect(),
            storage_for: Box::new(storage_for),
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
            acknowledged: Vec::new(),
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
        let Some(storage) = self.storages.get(&(pid, 1)).cloned() else {
            return;
        };
        let Ok(op) = self.cluster.clone().build_for_server(server, storage) else {
            return;
        };
        let incarnation = self.rng.next_u64();
        let first_req = self.rng.next_u64();
        let appends = AppendTracker::new(incarnation, first_req, self.limits);
        let node = SimNode {
            op,
            ended: EndedConfigs::new(pid),
            chain: Reconfigurer::following(Vec::new(), None),
            appends,
            clock: ClockStart::default(),
            reads: ReadTracker::default(),
        };
        self.nodes.insert(pid, Some(node));
        // A restart replays the configurations that ended since.
        self.move_on(pid);
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
            node.ended.reconnected(peer);
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
        self.reads.insert(id, self.acknowledged.len());
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
            Some(Some(node)) => (Cursor::new(&node.logs(), from), true),
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
                node.ended.tick();
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
            follows: true,
            retired: node.chain.retired(),
        };
        match env.msg {
            WireMessage::Protocol { config_id, msg } if msg.get_sender() == env.from => {
                node.ended.heard(env.from, config_id);
                if config_id == view.config_id() {
                    view.op.handle_incoming(msg);
                } else {
                    node.ended.handle(config_id, msg);
                }
            }
            WireMessage::Protocol { .. } => {}
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
            follows: true,
            retired: node.chain.retired(),
        };
        node.appends.dispatch(&mut view, now);
        let op = &mut *view.op;
        node.reads.ask(|ctx| op.read_index(ctx).is_ok());
        let config_id = view.config_id();
        let mut out: Vec<Message<T>> = Vec::new();
        view.op.take_outgoing_messages(&mut out);
        let mut from_ended = Vec::new();
        node.ended.take_outgoing(&mut from_ended);
        node.appends.observe(&view, now);
        let (mut states, mut failures) = (Vec::new(), Vec::new());
        view.op.take_read_states(&mut states);
        view.op.take_read_failures(&mut failures);
        let decided = view.decided_idx();
        let ended = view.op.is_reconfigured().is_some();
        node.reads
            .settle(states, failures, decided, config_id, ended);
        let mut envelopes: Vec<Envelope<T>> = out
            .into_iter()
            .map(|msg| Envelope {
                from: pid,
                to: msg.get_receiver(),
                msg: WireMessage::Protocol { config_id, msg },
            })
            .collect();
        envelopes.extend(from_ended.into_iter().map(|(config_id, msg)| Envelope {
            from: pid,
            to: msg.get_receiver(),
            msg: WireMessage::Protocol { config_id, msg },
        }));
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
        self.move_on(pid);
        self.collect(pid);
    }

    /// Moves node `pid` to the next configuration once its current one ended, as the runtime
    /// does (the engine's `move_on`), opening that configuration's storage.
    fn move_on(&mut self, pid: NodeId) {
        let now = self.micros();
        let Some(Some(node)) = self.nodes.get_mut(&pid) else {
            return;
        };
        let (storages, storage_for) = (&mut self.storages, &mut self.storage_for);
        let SimNode {
            op,
            ended,
            chain,
            appends,
            reads,
            ..
        } = node;
        let done = move_on(
            chain,
            pid,
            now,
            op,
            |next, ended| {
                let storage = storages
                    .entry((pid, next.configuration_id))
                    .or_insert_with(|| SimStorage::new(storage_for(pid)))
                    .clone();
                next_instance(next, ended, storage)
            },
            |op| ended.push(op),
        );
        if done.moved > 0 {
            reads.restart();
        }
        if done.retired {
            appends.fail_waiting_retired(now);
        }
        // No node joins in the simulation: nobody asks for handovers.
        chain.take_events();
        chain.take_outgoing();
    }

    /// Proposes the next configuration, of `nodes`, on node `pid` (a handle's `reconfigure`).
    /// Nodes of the next configuration that stay move to it by themselves once it is decided,
    /// the others retire. Only nodes the simulation started with may be named (a node joining
    /// from nowhere needs a handover, which the simulation does not model).
    pub fn reconfigure(&mut self, pid: NodeId, nodes: Vec<NodeId>) -> Result<(), String> {
        if let Some(stranger) = nodes.iter().find(|p| !self.nodes.contains_key(p)) {
            return Err(format!(
                "node {stranger} is not one of the simulation's nodes"
            ));
        }
        let Some(Some(node)) = self.nodes.get_mut(&pid) else {
            return Err(format!("node {pid} is down"));
        };
        let next = ClusterConfig {
            configuration_id: node.op.get_config().cluster_config.configuration_id + 1,
            nodes,
            ..Default::default()
        };
        node.op
            .reconfigure(next, None)
            .map_err(|e| format!("{e:?}"))?;
        self.pass(pid);
        Ok(())
    }

    /// The configuration node `pid` runs, if it is up.
    pub fn configuration(&self, pid: NodeId) -> Option<u32> {
        let node = self.nodes.get(&pid)?.as_ref()?;
        Some(node.op.get_config().cluster_config.configuration_id)
    }

    /// Whether node `pid` is up and retired (left out of the configuration that followed its
    /// own).
    pub fn retired(&self, pid: NodeId) -> bool {
        let node = self.nodes.get(&pid).and_then(|n| n.as_ref());
        node.is_some_and(|n| n.chain.retired())
    }

    /// Moves node `pid`'s answers into the outcomes.
    fn collect(&mut self, pid: NodeId) {
        let Some(Some(node)) = self.nodes.get_mut(&pid) else {
            return;
        };
        for answer in node.appends.take_answers() {
            if answer.result.is_ok() {
                self.acknowledged.push(answer.reply);
            }
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
        let history = node.logs();
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

    /// Each configuration's decided log: the longest among its nodes' storage (crashed
    /// nodes' too), after checking that they agree.
    fn decided_logs(&self) -> Result<BTreeMap<u32, Vec<T>>, String> {
        let mut logs: BTreeMap<u32, Vec<T>> = BTreeMap::new();
        for ((pid, config_id), storage) in &self.storages {
            let read = storage.with_store(|s| {
                // An ended configuration's decided index counts its StopSign, not in the log.
                let decided = s.get_decided_idx()?.min(s.get_log_len()?);
                s.get_entries(0, decided)
            });
            let entries = read.map_err(|e| format!("node {pid}'s storage: {e}"))?;
            let longest = logs.entry(*config_id).or_default();
            let common = longest.len().min(entries.len());
            if longest[..common] != entries[..common] {
                return Err(format!(
                    "node {pid}'s decided log of configuration {config_id} differs from another's"
                ));
            }
            if entries.len() > longest.len() {
                *longest = entries;
            }
        }
        Ok(logs)
    }

    /// Checks every outcome against the decided logs (see the module docs). Entries must be
    /// distinct for the check to tell them apart.
    pub fn check_outcomes(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        let logs = self.decided_logs()?;
        // Where each append's entry was decided: (configuration, index).
        let mut decided_at: BTreeMap<AppendId, Vec<(u32, usize)>> = BTreeMap::new();
        for (id, entry) in &self.appended {
            let at: Vec<(u32, usize)> = logs
                .iter()
                .flat_map(|(c, log)| log.iter().enumerate().map(move |(i, e)| (*c, i, e)))
                .filter(|(_, _, e)| *e == entry)
                .map(|(c, i, _)| (c, i))
                .collect();
            if at.len() > 1 {
                return Err(format!("{id:?} decided twice, at {at:?}"));
            }
            match self.outcomes.get(id) {
                Some(Ok(idx)) if at.iter().map(|(_, i)| *i).ne([*idx]) => {
                    return Err(format!("{id:?} answered Ok({idx}) but decided at {at:?}"));
                }
                Some(Err(e)) if never_decided(e) && !at.is_empty() => {
                    return Err(format!(
                        "{id:?} answered {e:?} (never decided) but decided at {at:?}"
                    ));
                }
                _ => {}
            }
            decided_at.insert(*id, at);
        }
        for (id, result) in &self.read_outcomes {
            let Ok(point) = result else { continue };
            let known = self.reads.get(id).copied().unwrap_or(0);
            for append in self.acknowledged.iter().take(known) {
                let Some(&(c, i)) = decided_at.get(append).and_then(|at| at.first()) else {
                    continue;
                };
                if c > point.config_id || (c == point.config_id && i >= point.idx) {
                    return Err(format!(
                        "{id:?} answered {point:?}, which misses {append:?}, acknowledged \
                         before the read at index {i} of configuration {c}"
                    ));
                }
            }
            // An ended configuration's decided index counts its StopSign too.
            let decided = logs.get(&point.config_id).map_or(0, |l| l.len() + 1);
            if point.idx > decided {
                return Err(format!(
                    "{id:?} answered {point:?}, past the {decided} entries decided"
                ));
            }
        }
        for (id, sub) in &self.subscriptions {
            let mut at: Option<(u32, Option<usize>)> = None;
            for got in &sub.received {
                match at {
                    Some((c, Some(n))) if c == got.config_id && got.idx != n => {
                        return Err(format!(
                            "{id:?} skipped from {n} to {} in configuration {c}",
                            got.idx
                        ));
                    }
                    Some((c, _)) if c != got.config_id && (got.config_id < c || got.idx != 0) => {
                        return Err(format!(
                            "{id:?} went from configuration {c} to index {} of {}",
                            got.idx, got.config_id
                        ));
                    }
                    _ => {}
                }
                // After a compacted prefix the next index is the compacted one.
                let next = matches!(got.entry, LogEntry::Decided(_) | LogEntry::StopSign(..))
                    .then_some(got.idx + 1);
                at = Some((got.config_id, next));
                if let LogEntry::Decided(entry) = &got.entry {
                    let log = logs.get(&got.config_id);
                    if log.and_then(|l| l.get(got.idx)) != Some(entry) {
                        return Err(format!(
                            "{id:?} received an entry at {} of configuration {} that is not the \
                             one decided there",
                            got.idx, got.config_id
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
