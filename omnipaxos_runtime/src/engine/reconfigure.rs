//! Moving a running node to the next configuration, as a state machine: inputs in (a decided
//! StopSign, the outcome of opening the next configuration's storage, a joiner's request, a
//! handover, the time), decisions and effects out (stay, retire or open the next
//! configuration; events; messages). The node's task owns the instances and the storage
//! factory and carries the decisions out (`actor/reconfigure.rs`).
//!
//! When the current configuration's StopSign is decided, the node keeps the handover (to serve
//! nodes that join); it opens the next configuration if it belongs to it and follows
//! reconfigurations, and retires otherwise. If the next configuration's storage cannot be
//! opened, the node stays in the ended configuration, reports `StorageFailed` once and tries
//! again every [`OPEN_RETRY_EVERY`]: retiring would end its part in the cluster for good (the
//! decided StopSign replays at every restart). A joining node asks the ended configuration's
//! nodes for the handover every [`ASK_HANDOVER_EVERY`] until one arrives.

use super::Micros;
use crate::status::OmniPaxosEvent;
use crate::wire::{NodeId, RuntimeEntry, WireMessage};
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Storage;
use omnipaxos::{ClusterConfig, OmniPaxos};

/// How often a node whose next configuration's storage failed to open tries again.
pub(crate) const OPEN_RETRY_EVERY: Micros = 1_000_000;

/// How often a joining node asks for the handover.
pub(crate) const ASK_HANDOVER_EVERY: Micros = 200_000;

/// A node joining after a configuration it was not part of.
struct Join<T: RuntimeEntry> {
    /// Nodes of the ended configuration to ask.
    from: Vec<NodeId>,
    /// The handover it joined with, and its configuration.
    got: Option<(u32, Handover<T>)>,
    last_ask: Option<Micros>,
}

/// What the node does about its ended configuration.
#[derive(Debug, PartialEq)]
pub(crate) enum NextStep {
    /// Nothing now (the configuration has not ended, or opening the next one failed and the
    /// retry is not due).
    Stay,
    /// The node is not in the next configuration (or does not follow): it retires.
    Retire,
    /// Open the next configuration and run it; report back with `opened` or `open_failed`.
    Open(ClusterConfig),
}

/// Where a node stands in the chain of configurations.
pub(crate) struct Reconfigurer<T: RuntimeEntry> {
    /// Whether the node moves to next configurations (it has a storage factory).
    follows: bool,
    /// The ended configuration's id and handover, served to joiners.
    handover: Option<(u32, Handover<T>)>,
    join: Option<Join<T>>,
    retired: bool,
    /// Opening the next configuration failed: when to try again.
    open_retry_at: Option<Micros>,
    events: Vec<OmniPaxosEvent>,
    outgoing: Vec<(NodeId, WireMessage<T>)>,
}

impl<T: RuntimeEntry> Reconfigurer<T> {
    /// A node that stays in its configuration and retires when it ends.
    pub(crate) fn fixed() -> Self {
        Self {
            follows: false,
            handover: None,
            join: None,
            retired: false,
            open_retry_at: None,
            events: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// A node that follows reconfigurations, joining after the configuration whose nodes are
    /// `join_from` if that is not empty, with the handover it saved before, if any.
    pub(crate) fn following(join_from: Vec<NodeId>, saved: Option<(u32, Handover<T>)>) -> Self {
        let join = (!join_from.is_empty()).then_some(Join {
            from: join_from,
            got: saved,
            last_ask: None,
        });
        Self {
            follows: true,
            join,
            ..Self::fixed()
        }
    }

    /// Whether the node moves to next configurations.
    pub(crate) fn follows(&self) -> bool {
        self.follows
    }

    /// Whether the node retired with its configuration.
    pub(crate) fn retired(&self) -> bool {
        self.retired
    }

    /// The ended configuration's id and handover.
    pub(crate) fn handover(&self) -> Option<&(u32, Handover<T>)> {
        self.handover.as_ref()
    }

    /// Whether the node joins and still waits for its handover.
    pub(crate) fn awaits_handover(&self) -> bool {
        self.join.as_ref().is_some_and(|j| j.got.is_none())
    }

    /// The handover the node joined with, and its configuration.
    pub(crate) fn joined_handover(&self) -> Option<(u32, &Handover<T>)> {
        let (id, handover) = self.join.as_ref()?.got.as_ref()?;
        Some((*id, handover))
    }

    /// Configuration `ended` decided its StopSign at `stop_sign_idx`, naming `next`; `handover`
    /// gives its state (asked for only when the step is taken).
    pub(crate) fn ended(
        &mut self,
        now: Micros,
        me: NodeId,
        ended: u32,
        stop_sign_idx: usize,
        next: &ClusterConfig,
        handover: impl FnOnce() -> Option<Handover<T>>,
    ) -> NextStep {
        if self.retired || self.open_retry_at.is_some_and(|at| now < at) {
            return NextStep::Stay;
        }
        if self.handover.as_ref().map(|(id, _)| *id) != Some(ended) {
            self.handover = handover().map(|h| (ended, h));
        }
        if self.open_retry_at.is_none() {
            self.events
                .push(OmniPaxosEvent::Reconfigured { stop_sign_idx });
        }
        if !(self.follows && next.nodes.contains(&me)) {
            tracing::info!(pid = me, ended, "configuration ended; this node retires");
            self.retired = true;
            return NextStep::Retire;
        }
        NextStep::Open(next.clone())
    }

    /// The next configuration runs.
    pub(crate) fn opened(&mut self) {
        self.open_retry_at = None;
    }

    /// Opening the next configuration failed with `error`: the node stays (its ended
    /// configuration sealed), says so once, and tries again later.
    pub(crate) fn open_failed(&mut self, now: Micros, error: String) {
        if self.open_retry_at.is_none() {
            tracing::error!(
                "cannot start the next configuration (staying, retrying every {} ms): {error}",
                OPEN_RETRY_EVERY / 1000
            );
            self.events.push(OmniPaxosEvent::StorageFailed { error });
        }
        self.open_retry_at = Some(now.saturating_add(OPEN_RETRY_EVERY));
    }

    /// The time passes: a joiner without its handover asks for it, for configuration
    /// `current` (the one it joins).
    pub(crate) fn tick(&mut self, now: Micros, current: u32) {
        let Some(join) = &mut self.join else {
            return;
        };
        let due = join
            .last_ask
            .map_or(true, |at| now.saturating_sub(at) >= ASK_HANDOVER_EVERY);
        if join.got.is_some() || !due {
            return;
        }
        join.last_ask = Some(now);
        for &pid in &join.from {
            let ask = WireMessage::HandoverRequest {
                next_config_id: current,
            };
            self.outgoing.push((pid, ask));
        }
    }

    /// A joiner asks for the handover of the configuration before `next_config_id`.
    pub(crate) fn serve(&mut self, from: NodeId, next_config_id: u32) {
        if let Some((config_id, handover)) = &self.handover {
            if handover.next_config().configuration_id == next_config_id {
                let msg = WireMessage::Handover {
                    config_id: *config_id,
                    handover: Box::new(handover.clone()),
                };
                self.outgoing.push((from, msg));
            }
        }
    }

    /// Whether the node, running `current`, takes `handover` (of `config_id`) to join with:
    /// it joins, has none yet, and the handover leads to `current`. The node keeps it (saves
    /// it) and then calls [`Self::joined`].
    pub(crate) fn wants(&self, current: u32, handover: &Handover<T>) -> bool {
        self.awaits_handover() && handover.next_config().configuration_id == current
    }

    /// The node joined with `handover`, the state of configuration `config_id`.
    pub(crate) fn joined(&mut self, config_id: u32, handover: Handover<T>) {
        if let Some(join) = &mut self.join {
            join.got = Some((config_id, handover));
        }
    }

    /// Events for the application, in order.
    pub(crate) fn take_events(&mut self) -> Vec<OmniPaxosEvent> {
        std::mem::take(&mut self.events)
    }

    /// Messages for other nodes, in order.
    pub(crate) fn take_outgoing(&mut self) -> Vec<(NodeId, WireMessage<T>)> {
        std::mem::take(&mut self.outgoing)
    }
}

/// What [`move_on`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MovedOn {
    /// Configurations the node moved past.
    pub(crate) moved: usize,
    /// Whether the node retired.
    pub(crate) retired: bool,
}

/// Moves a node on while its current configuration has ended (repeatedly, when a restart
/// replays): the engine decides, `open` builds the next configuration's instance (from the
/// ended one's settings), and `ended` keeps each instance the node moved past. Shared by the
/// node's task and the simulator.
pub(crate) fn move_on<T: RuntimeEntry, B: Storage<T>>(
    chain: &mut Reconfigurer<T>,
    me: NodeId,
    now: Micros,
    current: &mut OmniPaxos<T, B>,
    mut open: impl FnMut(&ClusterConfig, &OmniPaxos<T, B>) -> Result<OmniPaxos<T, B>, String>,
    mut ended: impl FnMut(OmniPaxos<T, B>),
) -> MovedOn {
    let mut done = MovedOn::default();
    // Called every pass: a retired node has nothing to decide (and the StopSign is not copied).
    if chain.retired() {
        return done;
    }
    while let Some(ss) = current.is_reconfigured() {
        let ended_id = current.get_config().cluster_config.configuration_id;
        let stop_sign_idx = current.get_decided_idx().saturating_sub(1);
        let op = &*current;
        let step = chain.ended(now, me, ended_id, stop_sign_idx, &ss.next_config, || {
            op.handover()
        });
        match step {
            NextStep::Stay => break,
            NextStep::Retire => {
                done.retired = true;
                break;
            }
            NextStep::Open(next) => match open(&next, current) {
                Ok(next_instance) => {
                    chain.opened();
                    tracing::info!(
                        pid = me,
                        ended = ended_id,
                        next = next.configuration_id,
                        "moved to the next configuration"
                    );
                    ended(std::mem::replace(current, next_instance));
                    done.moved += 1;
                }
                Err(e) => {
                    chain.open_failed(now, e);
                    break;
                }
            },
        }
    }
    done
}

/// The next configuration's instance for a node that ran `ended`: the same server settings and
/// the same `set_remote_compaction` choice, on `storage`.
pub(crate) fn next_instance<T: RuntimeEntry, B: Storage<T>>(
    next: &ClusterConfig,
    ended: &OmniPaxos<T, B>,
    storage: B,
) -> Result<OmniPaxos<T, B>, String> {
    let server = ended.get_config().server_config.clone();
    let mut op = next
        .clone()
        .build_for_server(server, storage)
        .map_err(|e| e.to_string())?;
    // The application's choice holds in every configuration.
    op.set_remote_compaction(ended.get_remote_compaction());
    Ok(op)
}
