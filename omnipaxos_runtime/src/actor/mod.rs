//! The node's task: it owns the `OmniPaxos` instance on a thread of its own (storage calls block
//! it, never the async executor), and runs passes. A pass waits for the first input (a request,
//! a message or a tick), takes every other input that is ready too, then writes and sends once:
//! one storage write and one message per peer serve everything that arrived together.

mod appends;
mod reads;
mod reconfigure;
mod report;
mod subscribers;

use crate::config::RuntimeConfig;
use crate::engine::clock::ClockStart;
use crate::engine::subscribers::DecidedEntry;
use crate::errors::RuntimeError;
use crate::prometheus::{observe, Latencies};
use crate::status::{Metrics, OmniPaxosEvent};
use crate::transport::{Inbox, Transport, TransportEvent};
use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use appends::{AppendReply, Appends};
use omnipaxos::messages::Message;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;
use omnipaxos::util::LogEntry;
use omnipaxos::CompactionErr;
use omnipaxos::{ClusterConfig, OmniPaxos, ProposeErr, ReadFailure, ReadState};
pub use reads::ReadPoint;
use reads::{ReadReply, Reads};
pub(crate) use reconfigure::Reconfiguration;
pub use reconfigure::StorageFactory;
use report::Report;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use subscribers::Subscriber;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What a handle asks of the node.
pub(crate) enum Command<T: RuntimeEntry> {
    Append {
        entry: T,
        reply: Option<AppendReply<T>>,
        deadline: Instant,
    },
    Read {
        reply: ReadReply,
        deadline: Instant,
    },
    Reconfigure {
        next: ClusterConfig,
        metadata: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), ProposeErr<T>>>,
    },
    TryBecomeLeader,
    Reconnected(NodeId),
    SubscribeDecided {
        from: usize,
        tx: mpsc::Sender<DecidedEntry<T>>,
        reply: oneshot::Sender<Result<(), RuntimeError>>,
    },
    CurrentLeader(oneshot::Sender<Option<(NodeId, bool)>>),
    DecidedIdx(oneshot::Sender<usize>),
    ReadDecidedSuffix(usize, oneshot::Sender<Option<Vec<LogEntry<T>>>>),
    /// `snapshot` (with `local_only`) or, without it, `trim`, of the current configuration.
    Compact {
        snapshot: Option<bool>,
        idx: Option<usize>,
        reply: oneshot::Sender<Result<(), CompactionErr>>,
    },
    Handover(oneshot::Sender<Option<(u32, Handover<T>)>>),
    AddPeer(NodeId, String),
    Shutdown,
}

/// The channels a node reports through.
pub(crate) struct Outputs {
    pub(crate) events: broadcast::Sender<OmniPaxosEvent>,
    pub(crate) metrics: watch::Sender<Metrics>,
}

pub(crate) struct Actor<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> {
    pub(crate) me: NodeId,
    /// When the node started: the engine's time counts from here.
    started: Instant,
    pub(crate) config: RuntimeConfig,
    pub(crate) op: OmniPaxos<T, B>,
    pub(crate) transport: Tr,
    pub(crate) appends: Appends<T>,
    pub(crate) reads: Reads,
    pub(crate) subscribers: Vec<Subscriber<T>>,
    /// Runtime messages to send at the end of the pass, by receiver.
    pub(crate) outbox: BTreeMap<NodeId, Vec<WireMessage<T>>>,
    pub(crate) reconf: Reconfiguration<T, B>,
    outgoing: Vec<Message<T>>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) read_failures: Vec<ReadFailure>,
    /// Declared after `op` (fields drop in order): when the metrics channel closes, the
    /// instance and its storage are already gone.
    pub(crate) outputs: Outputs,
    pub(crate) report: Report,
    /// Latency histograms, shared with the handles.
    latencies: Latencies,
    /// When the core's clock starts (the engine's rule).
    clock: ClockStart,
}

/// Whether the loop goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    pub(crate) fn new(
        op: OmniPaxos<T, B>,
        config: RuntimeConfig,
        transport: Tr,
        reconf: Reconfiguration<T, B>,
        outputs: Outputs,
        latencies: Latencies,
    ) -> Self {
        // Random per start: peers tell a restart from it.
        let incarnation = crate::wire::random_id();
        let limits = appends::limits(&config);
        Self {
            me: op.get_pid(),
            started: Instant::now(),
            config,
            op,
            transport,
            appends: Appends::new(incarnation, crate::wire::random_id(), limits),
            reads: Reads::default(),
            subscribers: Vec::new(),
            outbox: BTreeMap::new(),
            reconf,
            outgoing: Vec::new(),
            read_states: Vec::new(),
            read_failures: Vec::new(),
            outputs,
            report: Report::default(),
            latencies,
            clock: ClockStart::default(),
        }
    }

    /// The configuration id the current instance runs.
    pub(crate) fn config_id(&self) -> u32 {
        self.op.get_config().cluster_config.configuration_id
    }

    /// Runs the node until it is shut down or every handle is dropped.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command<T>>,
        inbox: Inbox<T>,
        mut incoming: mpsc::Receiver<TransportEvent<T>>,
    ) {
        self.transport.start(self.me, inbox.clone());
        self.reconf_start();
        let mut ticker = tokio::time::interval(self.config.tick_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut tick_due = false;
            let flow = tokio::select! {
                biased;
                _ = ticker.tick() => {
                    tick_due = true;
                    Flow::Continue
                }
                event = incoming.recv() => {
                    if let Some(event) = event {
                        self.on_transport(event);
                    }
                    Flow::Continue
                }
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => Flow::Stop,
                },
            };
            if flow == Flow::Stop || self.drain(&mut commands, &mut incoming) == Flow::Stop {
                break;
            }
            // The tick comes after every message that arrived before it: a heartbeat reply
            // that waited in the queue while this thread was not scheduled still counts in the
            // round it answers, so a busy machine does not end rounds early.
            if tick_due {
                self.on_tick();
            }
            if self.end_pass() == Flow::Stop {
                break;
            }
        }
        // `inbox` lives until here so that the transport's events never see a closed channel.
        drop(inbox);
        self.stop().await;
    }

    /// Takes every input that is ready, up to `max_inputs_per_pass`.
    fn drain(
        &mut self,
        commands: &mut mpsc::Receiver<Command<T>>,
        incoming: &mut mpsc::Receiver<TransportEvent<T>>,
    ) -> Flow {
        let mut taken = 1;
        while taken < self.config.max_inputs_per_pass {
            let mut any = false;
            if let Ok(event) = incoming.try_recv() {
                self.on_transport(event);
                taken += 1;
                any = true;
            }
            match commands.try_recv() {
                Ok(command) => {
                    if self.on_command(command) == Flow::Stop {
                        return Flow::Stop;
                    }
                    taken += 1;
                    any = true;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Flow::Stop,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if !any {
                break;
            }
        }
        Flow::Continue
    }

    /// Runs `f` on the instance and records how long its storage writes took, if it made any.
    fn in_core<R>(&mut self, f: impl FnOnce(&mut OmniPaxos<T, B>) -> R) -> R {
        let writes = self.op.get_storage_write_count();
        let start = Instant::now();
        let result = f(&mut self.op);
        self.record_writes(writes, start.elapsed());
        result
    }

    /// Records `elapsed` (a call into the core that wrote) as the time of the writes made
    /// since the count was `writes_before`, split evenly: the core's own work is microseconds
    /// against a write's flush.
    fn record_writes(&self, writes_before: u64, elapsed: Duration) {
        let writes = self
            .op
            .get_storage_write_count()
            .saturating_sub(writes_before);
        if writes > 0 {
            let each = elapsed / writes.min(u64::from(u32::MAX)) as u32;
            for _ in 0..writes {
                observe(&self.latencies.storage_write, each);
            }
        }
    }

    /// After any call into the core: settle what it decided or changed.
    pub(crate) fn observe(&mut self) {
        self.observe_appends();
    }

    fn on_tick(&mut self) {
        let config = self.op.get_config();
        let transport = &self.transport;
        let ticks = self.clock.tick(
            self.me,
            &config.cluster_config.nodes,
            |pid| transport.is_connected(pid),
            config.server_config.election_tick_timeout,
        );
        if ticks {
            self.in_core(|op| op.tick());
        }
        self.reconf_tick();
        self.observe();
        let now = Instant::now();
        self.expire_appends(now);
        self.tick_reads(now);
        self.publish_metrics();
    }

    fn on_transport(&mut self, event: TransportEvent<T>) {
        match event {
            TransportEvent::Message { from, msg } => self.on_message(from, msg),
            TransportEvent::Connected(pid) => {
                let hello = WireMessage::Hello {
                    incarnation: self.appends.incarnation(),
                };
                self.outbox.entry(pid).or_default().push(hello);
                self.op.reconnected(pid);
                self.reconf_reconnected(pid);
                self.observe();
            }
            TransportEvent::Disconnected(pid) => self.abandon_sent_to(pid),
        }
    }

    fn on_message(&mut self, from: NodeId, msg: WireMessage<T>) {
        match msg {
            WireMessage::Protocol { config_id, msg } => {
                if msg.get_sender() != from || msg.get_receiver() != self.me {
                    tracing::warn!(
                        pid = self.me,
                        from,
                        "dropped a message that claims to be from {} to {}",
                        msg.get_sender(),
                        msg.get_receiver()
                    );
                    return;
                }
                self.reconf.ended.heard(from, config_id);
                if config_id == self.config_id() {
                    self.in_core(|op| op.handle_incoming(msg));
                    self.observe();
                } else {
                    self.reconf_message(config_id, msg);
                }
            }
            WireMessage::Append {
                incarnation,
                ballot,
                entries,
            } => self.on_remote_append(from, incarnation, ballot, entries),
            WireMessage::AppendOutcome {
                incarnation,
                outcomes,
            } => self.on_append_outcomes(from, incarnation, outcomes),
            WireMessage::Hello { incarnation } => self.note_incarnation(from, incarnation),
            WireMessage::HandoverRequest { next_config_id } => {
                self.serve_handover(from, next_config_id)
            }
            WireMessage::Handover {
                config_id,
                handover,
            } => self.on_handover(config_id, *handover),
        }
    }

    fn on_command(&mut self, command: Command<T>) -> Flow {
        match command {
            Command::Append {
                entry,
                reply,
                deadline,
            } => self.submit_append(entry, reply, deadline),
            Command::Read { reply, deadline } => self.submit_read(reply, deadline),
            Command::Reconfigure {
                next,
                metadata,
                reply,
            } => {
                let _ = reply.send(self.op.reconfigure(next, metadata));
                self.observe();
            }
            Command::TryBecomeLeader => {
                self.in_core(|op| op.try_become_leader());
                self.observe();
            }
            Command::Reconnected(pid) => {
                self.op.reconnected(pid);
                self.observe();
            }
            Command::SubscribeDecided { from, tx, reply } => {
                let result = if self.subscribers.len() >= self.config.max_decided_subscribers {
                    Err(RuntimeError::TooManySubscribers)
                } else {
                    let subscriber = self.new_subscriber(tx, from);
                    self.subscribers.push(subscriber);
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::CurrentLeader(reply) => {
                let _ = reply.send(self.op.get_current_leader());
            }
            Command::DecidedIdx(reply) => {
                let _ = reply.send(self.op.get_decided_idx());
            }
            Command::ReadDecidedSuffix(from, reply) => {
                let _ = reply.send(self.op.read_decided_suffix(from));
            }
            Command::Compact {
                snapshot,
                idx,
                reply,
            } => {
                // Not timed as storage writes: building a snapshot is most of the call.
                let result = match snapshot {
                    Some(local_only) => self.op.snapshot(idx, local_only),
                    None => self.op.trim(idx),
                };
                let _ = reply.send(result);
                self.observe();
            }
            Command::Handover(reply) => {
                let _ = reply.send(self.reconf.chain.handover().cloned());
            }
            Command::AddPeer(pid, address) => self.transport.add_peer(pid, Some(address)),
            Command::Shutdown => return Flow::Stop,
        }
        Flow::Continue
    }

    /// The end of a pass: place or send appends, start reads, write and send, then answer
    /// what was decided and report. `Stop` when storage failed to give back decided entries.
    fn end_pass(&mut self) -> Flow {
        self.dispatch_appends();
        self.ask_reads();
        // The leader's new entries leave before its own write of them, so that the followers
        // write while it does (the core still counts the leader only once its write returned).
        let config_id = self.config_id();
        let transport = &mut self.transport;
        let writes = self.op.get_storage_write_count();
        let start = Instant::now();
        let mut sending = Duration::ZERO;
        self.op
            .take_outgoing_messages_pipelined(&mut self.outgoing, |early| {
                let sending_start = Instant::now();
                let mut by_peer: BTreeMap<NodeId, Vec<WireMessage<T>>> = BTreeMap::new();
                for msg in early.drain(..) {
                    let to = msg.get_receiver();
                    by_peer
                        .entry(to)
                        .or_default()
                        .push(WireMessage::Protocol { config_id, msg });
                }
                for (to, mut messages) in by_peer {
                    transport.send(to, &mut messages);
                }
                sending += sending_start.elapsed();
            });
        self.record_writes(writes, start.elapsed().saturating_sub(sending));
        self.observe();
        for msg in self.outgoing.drain(..) {
            let to = msg.get_receiver();
            self.outbox
                .entry(to)
                .or_default()
                .push(WireMessage::Protocol { config_id, msg });
        }
        self.reconf_outgoing();
        self.deliver_appends();
        for (to, messages) in self.outbox.iter_mut() {
            if !messages.is_empty() {
                self.transport.send(*to, messages);
            }
        }
        self.settle_reads();
        self.reconf_check();
        let fed = self.feed_subscribers();
        self.report_pass();
        match fed {
            Ok(()) => Flow::Continue,
            Err(failure) => {
                self.report_storage_failure(failure.to_string());
                Flow::Stop
            }
        }
    }

    /// Answers everything still waiting, stops the transport, and drops the instance (which
    /// closes its storage).
    async fn stop(mut self) {
        self.appends.shut_down();
        self.deliver_appends();
        self.reads.shut_down();
        self.deliver_reads();
        self.subscribers.clear();
        self.transport.shutdown().await;
        self.publish_metrics();
        tracing::info!(pid = self.me, "node stopped");
    }
}
