//! Linearizable reads through the core's read index, as a state machine: a read is asked of
//! the core, asked again on the next tick when the core cannot start one (no leader yet, an
//! election) or reports it failed, and answered once this node's decided index reached the
//! read's index, so that state applied from the decided log up to the answer is current.
//! Inputs: submissions, the core's read states and failures, the decided index, the time.
//! Effects: answers.

use super::Micros;
use crate::errors::ReadError;
use omnipaxos::{ReadFailure, ReadState};
use std::collections::BTreeMap;

/// Where a linearizable read may be served: once state applied from the decided log has
/// reached index `idx` of configuration `config_id`
/// (`OmniPaxosHandle::read_linearizable_at`). Indices start at 0 in every configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadPoint {
    /// The configuration whose log the index is in.
    pub config_id: u32,
    /// The decided index the state must have reached.
    pub idx: usize,
}

struct PendingRead<R> {
    reply: R,
    deadline: Micros,
    /// The core's answer, once it gave one.
    index: Option<usize>,
}

/// The reads of one node. `R` is how a caller is answered.
pub(crate) struct ReadTracker<R> {
    next_ctx: u64,
    pending: BTreeMap<u64, PendingRead<R>>,
    /// Reads to ask of the core at the next chance.
    to_ask: Vec<u64>,
    /// Reads the core could not start, or that failed; asked again on the next tick.
    retry: Vec<u64>,
    answers: Vec<(R, Result<ReadPoint, ReadError>)>,
}

impl<R> Default for ReadTracker<R> {
    fn default() -> Self {
        Self {
            next_ctx: 0,
            pending: BTreeMap::new(),
            to_ask: Vec::new(),
            retry: Vec::new(),
            answers: Vec::new(),
        }
    }
}

impl<R> ReadTracker<R> {
    /// Reads waiting for an answer.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The answers to give now.
    pub(crate) fn take_answers(
        &mut self,
    ) -> std::vec::Drain<'_, (R, Result<ReadPoint, ReadError>)> {
        self.answers.drain(..)
    }

    /// A new read, to be answered by `deadline` at the latest.
    pub(crate) fn submit(&mut self, reply: R, deadline: Micros) {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        self.pending.insert(
            ctx,
            PendingRead {
                reply,
                deadline,
                index: None,
            },
        );
        self.to_ask.push(ctx);
    }

    /// Asks the core for every read waiting to be asked; `read_index(ctx)` says whether the
    /// core started it. One it could not start is asked again on the next tick.
    pub(crate) fn ask(&mut self, mut read_index: impl FnMut(u64) -> bool) {
        for ctx in std::mem::take(&mut self.to_ask) {
            if self.pending.contains_key(&ctx) && !read_index(ctx) {
                self.retry.push(ctx);
            }
        }
    }

    /// A tick: reads to retry are asked again; the expired ones are answered `Timeout`.
    pub(crate) fn tick(&mut self, now: Micros) {
        let retry = std::mem::take(&mut self.retry);
        self.to_ask.extend(retry);
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some(read) = self.pending.remove(&ctx) {
                self.answers.push((read.reply, Err(ReadError::Timeout)));
            }
        }
    }

    /// The configuration changed: reads not answered yet are asked of the new instance.
    pub(crate) fn restart(&mut self) {
        for (ctx, read) in self.pending.iter_mut() {
            read.index = None;
            self.to_ask.push(*ctx);
        }
        self.retry.clear();
    }

    /// Takes the core's read states and failures, and answers the reads whose index this node
    /// has decided up to (`decided`, in configuration `config_id`). Nothing is answered from a
    /// configuration that has `ended` (its StopSign decided): the next one may already have
    /// decided writes that a read must see, so the reads wait for the node to move on and are
    /// asked again there ([`Self::restart`]); a node that retires answers them `Timeout`.
    pub(crate) fn settle(
        &mut self,
        states: impl IntoIterator<Item = ReadState>,
        failures: impl IntoIterator<Item = ReadFailure>,
        decided: usize,
        config_id: u32,
        ended: bool,
    ) {
        for state in states {
            if let Some(read) = self.pending.get_mut(&state.ctx) {
                read.index = Some(state.index);
            }
        }
        for failure in failures {
            if self.pending.contains_key(&failure.ctx) {
                tracing::debug!(ctx = failure.ctx, reason = %failure.reason, "read failed, asking again");
                self.retry.push(failure.ctx);
            }
        }
        if ended {
            return;
        }
        let ready: Vec<(u64, usize)> = self
            .pending
            .iter()
            .filter_map(|(ctx, r)| r.index.filter(|i| *i <= decided).map(|i| (*ctx, i)))
            .collect();
        for (ctx, idx) in ready {
            if let Some(read) = self.pending.remove(&ctx) {
                self.answers
                    .push((read.reply, Ok(ReadPoint { config_id, idx })));
            }
        }
    }

    /// Every read still waiting gets `Shutdown`.
    pub(crate) fn shut_down(&mut self) {
        for (_, read) in std::mem::take(&mut self.pending) {
            self.answers.push((read.reply, Err(ReadError::Shutdown)));
        }
        self.to_ask.clear();
        self.retry.clear();
    }
}
