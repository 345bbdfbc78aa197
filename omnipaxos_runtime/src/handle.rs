//! The handle to a running node, and the calls that start one.

use crate::actor::{Actor, Command, Outputs, ReadPoint, Reconfiguration, StorageFactory};
use crate::config::RuntimeConfig;
use crate::engine::subscribers::DecidedEntry;
use crate::errors::{
    AppendError, CompactError, ReadError, ReconfigureError, RuntimeError, RuntimeProposeErr,
};
use crate::prometheus::{Latencies, NodeCollector};
use crate::status::{Metrics, OmniPaxosEvent};
use crate::transport::{Inbox, Transport};
use crate::wire::{NodeId, RuntimeEntry};
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// A cloneable, `Send + Sync` handle to a running node. Dropping the last clone stops the node
/// as [`shutdown`](Self::shutdown) does.
pub struct OmniPaxosHandle<T: RuntimeEntry> {
    shared: Arc<Shared<T>>,
}

impl<T: RuntimeEntry> Clone for OmniPaxosHandle<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<T: RuntimeEntry> {
    commands: mpsc::Sender<Command<T>>,
    events: broadcast::Sender<OmniPaxosEvent>,
    metrics: watch::Receiver<Metrics>,
    /// Becomes true when the node stopped: its storage is closed and its tasks ended.
    stopped: watch::Receiver<bool>,
    /// The node's thread, awaited by the first `shutdown`.
    thread: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    config: RuntimeConfig,
    latencies: Latencies,
}

/// A stream of decided entries (`OmniPaxosHandle::subscribe_decided`).
pub struct DecidedStream<T: RuntimeEntry> {
    rx: mpsc::Receiver<DecidedEntry<T>>,
}

impl<T: RuntimeEntry> DecidedStream<T> {
    /// The next decided entry; `None` once the node stopped.
    pub async fn next(&mut self) -> Option<DecidedEntry<T>> {
        self.rx.recv().await
    }
}

/// Starts `op` as a node on the current Tokio runtime, talking to its peers through
/// `transport`, and returns its handle. The node stays in its configuration: when a
/// reconfiguration ends it, the log stays sealed (see [`spawn_reconfigurable`] for a node that
/// moves on by itself).
///
/// Must be called from within a Tokio runtime (like `tokio::spawn`). The instance lives on a
/// thread of the runtime's blocking pool, so storage calls never block async tasks.
///
/// **Election timing** is `op`'s: its `election_tick_timeout` ticks of
/// [`RuntimeConfig::tick_period`] each. An instance built from a `ServerConfig` made in code
/// with `..Default::default()` has a one-tick round (10 ms), which a loaded machine misses
/// often enough to change leaders needlessly; use
/// [`DEFAULT_ELECTION_TICKS`](crate::config::DEFAULT_ELECTION_TICKS) and
/// [`DEFAULT_RESEND_TICKS`](crate::config::DEFAULT_RESEND_TICKS), which is what
/// [`NodeConfig::from_toml`](crate::config::NodeConfig::from_toml) applies when the file leaves
/// them out.
pub fn spawn_actor<T, B, Tr>(
    op: OmniPaxos<T, B>,
    config: RuntimeConfig,
    transport: Tr,
) -> OmniPaxosHandle<T>
where
    T: RuntimeEntry,
    B: Storage<T> + Send + 'static,
    Tr: Transport<T>,
{
    let me = op.get_pid();
    spawn(op, config, transport, Reconfiguration::fixed(me))
}

/// Like [`spawn_actor`], for a node that follows reconfigurations: when a StopSign naming it
/// is decided, it opens the next configuration's storage with `storage` and moves on by itself
/// (see `docs/runtime.md`). `join_from` names the nodes of the previous configuration when this
/// node joins by reconfiguration (empty otherwise): the node fetches the handover from them.
/// What was set on `op` with `set_remote_compaction` holds in every configuration it opens; if
/// a next configuration's storage cannot be opened, the node stays in the ended one (sealed),
/// reports `OmniPaxosEvent::StorageFailed` and tries again every second.
pub fn spawn_reconfigurable<T, B, Tr, F>(
    op: OmniPaxos<T, B>,
    config: RuntimeConfig,
    transport: Tr,
    storage: F,
    join_from: Vec<NodeId>,
) -> OmniPaxosHandle<T>
where
    T: RuntimeEntry,
    B: Storage<T> + Send + 'static,
    Tr: Transport<T>,
    F: StorageFactory<T, B>,
{
    let me = op.get_pid();
    spawn(
        op,
        config,
        transport,
        Reconfiguration::with(me, Box::new(storage), join_from),
    )
}

fn spawn<T, B, Tr>(
    op: OmniPaxos<T, B>,
    config: RuntimeConfig,
    transport: Tr,
    reconf: Reconfiguration<T, B>,
) -> OmniPaxosHandle<T>
where
    T: RuntimeEntry,
    B: Storage<T> + Send + 'static,
    Tr: Transport<T>,
{
    let (commands_tx, commands_rx) = mpsc::channel(config.cmd_channel_capacity.max(1));
    let (events, _) = broadcast::channel(config.event_capacity.max(1));
    let (metrics_tx, metrics_rx) = watch::channel(Metrics::default());
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let (inbox, incoming) = Inbox::new(config.incoming_capacity);
    let outputs = Outputs {
        events: events.clone(),
        metrics: metrics_tx,
    };
    let latencies = Latencies::default();
    let actor = Actor::new(
        op,
        config.clone(),
        transport,
        reconf,
        outputs,
        latencies.clone(),
    );
    let runtime = tokio::runtime::Handle::current();
    let thread = tokio::task::spawn_blocking(move || {
        runtime.block_on(actor.run(commands_rx, inbox, incoming));
        let _ = stopped_tx.send(true);
    });
    OmniPaxosHandle {
        shared: Arc::new(Shared {
            commands: commands_tx,
            events,
            metrics: metrics_rx,
            stopped: stopped_rx,
            thread: std::sync::Mutex::new(Some(thread)),
            config,
            latencies,
        }),
    }
}

impl<T: RuntimeEntry> OmniPaxosHandle<T> {
    fn send(&self, command: Command<T>) -> Result<(), RuntimeError> {
        self.shared.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RuntimeError::TooManyOutstanding,
            mpsc::error::TrySendError::Closed(_) => RuntimeError::Shutdown,
        })
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Command<T>,
    ) -> Result<R, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| RuntimeError::Shutdown)
    }

    /// Appends `entry` and resolves with its index **once it is decided**: the index it has in
    /// the decided log, never a guess. Waits while no leader is known, up to
    /// `RuntimeConfig::append_notify_timeout`. See [`AppendError`] for each failure and whether
    /// the entry may still be decided.
    ///
    /// Better than upstream's runtime: the index is exact also for entries appended on a
    /// follower (the leader's runtime reports it), and a leader change is never reported as a
    /// certain loss.
    pub async fn append_notify(&self, entry: T) -> Result<usize, AppendError<T>> {
        self.append_notify_with_timeout(entry, self.shared.config.append_notify_timeout)
            .await
    }

    /// [`append_notify`](Self::append_notify) with its own deadline.
    pub async fn append_notify_with_timeout(
        &self,
        entry: T,
        timeout: Duration,
    ) -> Result<usize, AppendError<T>> {
        let (tx, rx) = oneshot::channel();
        let command = Command::Append {
            entry,
            reply: Some(tx),
            deadline: Instant::now() + timeout,
        };
        match self.send(command) {
            Ok(()) => rx.await.unwrap_or(Err(AppendError::Shutdown)),
            Err(RuntimeError::TooManyOutstanding) => Err(AppendError::TooManyOutstanding),
            Err(_) => Err(AppendError::Shutdown),
        }
    }

    /// Appends `entry` without waiting for its outcome.
    pub async fn append(&self, entry: T) -> Result<(), RuntimeProposeErr<T>> {
        let command = Command::Append {
            entry,
            reply: None,
            deadline: Instant::now() + self.shared.config.append_notify_timeout,
        };
        self.send(command).map_err(|e| match e {
            RuntimeError::TooManyOutstanding => RuntimeProposeErr::TooManyOutstanding,
            _ => RuntimeProposeErr::Shutdown,
        })
    }

    /// A linearizable read point: resolves with an index once this node's decided index reached
    /// it. State built from the decided log up to (at least) that index reflects every write
    /// that completed before this call started. Nothing is written to the log (the core's read
    /// index; a lease when one is set on the instance).
    pub async fn read_linearizable(&self) -> Result<usize, ReadError> {
        self.read_linearizable_at().await.map(|point| point.idx)
    }

    /// [`read_linearizable`](Self::read_linearizable) with the configuration the index belongs
    /// to: what an application that follows reconfigurations compares its applied position
    /// with (an index alone is ambiguous across configurations).
    pub async fn read_linearizable_at(&self) -> Result<ReadPoint, ReadError> {
        let deadline = Instant::now() + self.shared.config.read_timeout;
        match self.ask(|reply| Command::Read { reply, deadline }).await {
            Ok(result) => result,
            Err(RuntimeError::TooManyOutstanding) => Err(ReadError::TooManyOutstanding),
            Err(_) => Err(ReadError::Shutdown),
        }
    }

    /// A stream of the decided entries from index `from` of the current configuration on, then
    /// as they are decided, across reconfigurations. Each subscriber has its own cursor.
    pub async fn subscribe_decided(&self, from: usize) -> Result<DecidedStream<T>, RuntimeError> {
        let (tx, rx) = mpsc::channel(self.shared.config.decided_channel_capacity.max(1));
        self.ask(|reply| Command::SubscribeDecided { from, tx, reply })
            .await??;
        Ok(DecidedStream { rx })
    }

    /// Events from now on: leader elected, decided, reconfigured, storage failed. A receiver that
    /// falls more than `event_capacity` behind skips the oldest.
    pub fn subscribe_events(&self) -> broadcast::Receiver<OmniPaxosEvent> {
        self.shared.events.subscribe()
    }

    /// Adds this node's metrics to `registry`, for the Prometheus text format: its state,
    /// traffic by peer and kind, and latency histograms (see [`crate::prometheus`] and
    /// `docs/observability.md`). Values are read when the registry is encoded.
    ///
    /// ```no_run
    /// # async fn f(handle: omnipaxos_runtime::OmniPaxosHandle<u64>) {
    /// use omnipaxos_runtime::prometheus_client::{encoding::text::encode, registry::Registry};
    /// let mut registry = Registry::default();
    /// handle.register_prometheus(&mut registry);
    /// let mut text = String::new();
    /// encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("omnipaxos_decided_index"));
    /// # }
    /// ```
    pub fn register_prometheus(&self, registry: &mut Registry) {
        crate::prometheus::register(
            registry,
            NodeCollector {
                metrics: self.shared.metrics.clone(),
                latencies: self.shared.latencies.clone(),
            },
        );
    }

    /// The node's metrics, updated every tick and on every leader change.
    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        self.shared.metrics.clone()
    }

    /// Proposes the next configuration (see `OmniPaxos::reconfigure`). A node started with
    /// [`spawn_reconfigurable`] moves to it by itself once it is decided.
    pub async fn reconfigure(
        &self,
        next: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), ReconfigureError<T>> {
        self.ask(|reply| Command::Reconfigure {
            next,
            metadata,
            reply,
        })
        .await?
        .map_err(ReconfigureError::Propose)
    }

    /// Asks the node to take over leadership (`OmniPaxos::try_become_leader`).
    pub async fn try_become_leader(&self) -> Result<(), RuntimeError> {
        self.send(Command::TryBecomeLeader)
    }

    /// Tells the node a connection to `pid` was re-established (transports do this already).
    pub async fn reconnected(&self, pid: NodeId) -> Result<(), RuntimeError> {
        self.send(Command::Reconnected(pid))
    }

    /// The leader this node follows and whether it reached the accept phase. Unlike upstream's
    /// (which returns the value itself), `Err(Shutdown)` tells a stopped node from one that
    /// knows no leader; the same holds for `decided_idx` and `read_decided_suffix`.
    pub async fn current_leader(&self) -> Result<Option<(NodeId, bool)>, RuntimeError> {
        self.ask(Command::CurrentLeader).await
    }

    /// The node's decided index.
    pub async fn decided_idx(&self) -> Result<usize, RuntimeError> {
        self.ask(Command::DecidedIdx).await
    }

    /// The decided entries from `from` on (`OmniPaxos::read_decided_suffix`).
    pub async fn read_decided_suffix(
        &self,
        from: usize,
    ) -> Result<Option<Vec<LogEntry<T>>>, RuntimeError> {
        self.ask(|reply| Command::ReadDecidedSuffix(from, reply))
            .await
    }

    /// Compacts the current configuration's decided log up to `compact_idx` (all of it if
    /// `None`) into a snapshot (`OmniPaxos::snapshot`): only here if `local_only`, on every node
    /// otherwise.
    pub async fn snapshot(
        &self,
        compact_idx: Option<usize>,
        local_only: bool,
    ) -> Result<(), CompactError> {
        self.ask(|reply| Command::Compact {
            snapshot: Some(local_only),
            idx: compact_idx,
            reply,
        })
        .await?
        .map_err(CompactError::Compaction)
    }

    /// Trims the current configuration's decided log up to `trim_idx` on every node
    /// (`OmniPaxos::trim`).
    pub async fn trim(&self, trim_idx: Option<usize>) -> Result<(), CompactError> {
        self.ask(|reply| Command::Compact {
            snapshot: None,
            idx: trim_idx,
            reply,
        })
        .await?
        .map_err(CompactError::Compaction)
    }

    /// The state of the last configuration that ended on this node (its id and
    /// `OmniPaxos::handover`), which joining nodes start from; `None` before one ended.
    pub async fn handover(&self) -> Result<Option<(u32, Handover<T>)>, RuntimeError> {
        self.ask(Command::Handover).await
    }

    /// Tells the transport where peer `pid` is (`Transport::add_peer`): for nodes that join in a
    /// reconfiguration, which the configured peers do not list. The application decides how
    /// addresses travel (for instance in the StopSign's metadata, as the kv_store example does).
    pub async fn add_peer(&self, pid: NodeId, address: String) -> Result<(), RuntimeError> {
        self.send(Command::AddPeer(pid, address))
    }

    /// Stops the node and waits until it stopped: pending requests are answered `Shutdown`,
    /// the transport's tasks have ended and the storage is closed (a persistent store can be
    /// reopened at once). Other handles then get `Shutdown` too.
    pub async fn shutdown(&self) {
        let _ = self.shared.commands.send(Command::Shutdown).await;
        let thread = self
            .shared
            .thread
            .lock()
            .map(|mut t| t.take())
            .unwrap_or(None);
        match thread {
            // The thread has returned: nothing of the node runs any more.
            Some(thread) => {
                let _ = thread.await;
            }
            None => {
                let mut stopped = self.shared.stopped.clone();
                let _ = stopped.wait_for(|s| *s).await;
            }
        }
    }

    /// Whether the node stopped.
    pub fn is_stopped(&self) -> bool {
        *self.shared.stopped.borrow()
    }
}
