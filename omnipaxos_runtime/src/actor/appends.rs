//! The node's side of appends: the engine's [`AppendTracker`] (where every rule lives) fed from
//! the node's task, with the core, the transport and the reconfiguration state as its view,
//! and its effects carried out: answers go to the callers' channels, messages to the outbox.

use super::Actor;
use crate::config::RuntimeConfig;
use crate::engine::appends::{AppendLimits, AppendTracker};
use crate::engine::{leader_ballot, CoreView, Micros};
use crate::errors::AppendError;
use crate::prometheus::observe;
use crate::transport::Transport;
use crate::wire::{NodeId, RemoteOutcome, RuntimeEntry};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::Storage;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where the outcome of an append goes.
pub(crate) type AppendReply<T> = oneshot::Sender<Result<usize, AppendError<T>>>;

/// The node's appends: the engine's tracker, answering through channels.
pub(crate) type Appends<T> = AppendTracker<T, AppendReply<T>>;

fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The tracker's limits from the runtime's configuration.
pub(crate) fn limits(config: &RuntimeConfig) -> AppendLimits {
    AppendLimits {
        max_pending: config.max_pending_appends,
        leader_unreachable: micros(config.leader_unreachable_timeout),
        relay_timeout: micros(config.append_notify_timeout),
        batch_hold: micros(config.tick_period),
    }
}

/// Runs `f` on the tracker with the node's view; fields borrowed one by one so that the
/// tracker and the core can be used together.
macro_rules! with_view {
    ($actor:expr, |$tracker:ident, $view:ident| $body:expr) => {{
        let actor = &mut *$actor;
        let transport = &actor.transport;
        #[allow(unused_mut)] // only `dispatch` appends through the view
        let mut $view = CoreView {
            me: actor.me,
            op: &mut actor.op,
            connected: |pid| transport.is_connected(pid),
            follows: actor.reconf.chain.follows(),
            retired: actor.reconf.chain.retired(),
        };
        let $tracker = &mut actor.appends;
        $body
    }};
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    /// The engine's time: microseconds since this node started.
    pub(crate) fn now_micros(&self) -> Micros {
        micros(self.started.elapsed())
    }

    pub(crate) fn micros_at(&self, at: Instant) -> Micros {
        micros(at.saturating_duration_since(self.started))
    }

    /// A new append from a handle.
    pub(crate) fn submit_append(
        &mut self,
        entry: T,
        reply: Option<AppendReply<T>>,
        deadline: Instant,
    ) {
        let (now, deadline) = (self.now_micros(), self.micros_at(deadline));
        self.appends.submit(entry, reply, now, deadline);
        self.answer_callers();
    }

    /// Places the waiting appends here if this node leads, or sends them to the leader.
    pub(crate) fn dispatch_appends(&mut self) {
        let now = self.now_micros();
        with_view!(self, |tracker, view| tracker.dispatch(&mut view, now));
        self.answer_callers();
    }

    /// Settles what the last call into the core decided.
    pub(crate) fn observe_appends(&mut self) {
        // Called after every call into the core: nothing to read (not even the clock) unless
        // entries placed here wait for their fate.
        if !self.appends.has_placed() {
            return;
        }
        let now = self.now_micros();
        with_view!(self, |tracker, view| tracker.observe(&view, now));
        self.answer_callers();
    }

    /// Entries another node asks this one, as leader of `ballot`, to append.
    pub(crate) fn on_remote_append(
        &mut self,
        from: NodeId,
        incarnation: u64,
        ballot: Ballot,
        entries: Vec<(u64, T)>,
    ) {
        let now = self.now_micros();
        with_view!(self, |tracker, view| tracker.on_remote_append(
            &view,
            from,
            incarnation,
            ballot,
            entries,
            now
        ));
        self.answer_callers();
    }

    /// The leader's answer about entries this node sent it.
    pub(crate) fn on_append_outcomes(
        &mut self,
        from: NodeId,
        incarnation: u64,
        outcomes: Vec<(u64, RemoteOutcome)>,
    ) {
        let now = self.now_micros();
        with_view!(self, |tracker, view| tracker.on_outcomes(
            &view,
            from,
            incarnation,
            outcomes,
            now
        ));
        self.answer_callers();
    }

    /// A peer's runtime announced its incarnation.
    pub(crate) fn note_incarnation(&mut self, peer: NodeId, incarnation: u64) {
        let now = self.now_micros();
        self.appends.note_incarnation(peer, incarnation, now);
        self.answer_callers();
    }

    /// The connection to `peer` broke: what was sent to it has an unknown fate.
    pub(crate) fn abandon_sent_to(&mut self, peer: NodeId) {
        let now = self.now_micros();
        self.appends.abandon_sent_to(peer, now);
        self.answer_callers();
    }

    /// This node retired with its configuration: appends waiting for the next one fail.
    pub(crate) fn fail_waiting_retired(&mut self) {
        let now = self.now_micros();
        self.appends.fail_waiting_retired(now);
        self.answer_callers();
    }

    /// Answers the appends whose deadline passed.
    pub(crate) fn expire_appends(&mut self, now: Instant) {
        let now = self.micros_at(now);
        self.appends.expire(now);
        self.answer_callers();
    }

    /// The newest leader ballot this node knows of.
    pub(crate) fn leader_ballot(&self) -> Ballot {
        leader_ballot(&self.op)
    }

    /// Answers the callers the tracker has outcomes for, at once: a caller woken early
    /// appends again early (with 64 callers, answering at the end of the pass instead cost a
    /// sixth of the throughput).
    fn answer_callers(&mut self) {
        for answer in self.appends.take_answers() {
            if let Some(took) = answer.took {
                observe(
                    &self.latencies.append_to_decide,
                    Duration::from_micros(took),
                );
            }
            let _ = answer.reply.send(answer.result);
        }
    }

    /// Carries out the tracker's effects at the end of a pass: answers to the callers,
    /// messages into the outbox.
    pub(crate) fn deliver_appends(&mut self) {
        self.answer_callers();
        for (to, msg) in self.appends.take_messages() {
            self.outbox.entry(to).or_default().push(msg);
        }
    }
}
