//! Linearizable reads through the core's read index: asked of the core, asked again on the next
//! tick when it cannot start one (no leader yet, an election), and answered once this node's
//! decided index reached the read's index, so that state applied from the decided log up to the
//! answer is current.

use super::Actor;
use crate::errors::ReadError;
use crate::transport::Transport;
use crate::wire::RuntimeEntry;
use omnipaxos::storage::Storage;
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::sync::oneshot;

pub(crate) type ReadReply = oneshot::Sender<Result<ReadPoint, ReadError>>;

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

struct PendingRead {
    reply: ReadReply,
    deadline: Instant,
    /// The core's answer, once it gave one.
    index: Option<usize>,
}

#[derive(Default)]
pub(crate) struct Reads {
    next_ctx: u64,
    pending: BTreeMap<u64, PendingRead>,
    /// Reads to ask of the core at the next chance.
    to_ask: Vec<u64>,
    /// Reads the core could not start; asked again on the next tick.
    retry: Vec<u64>,
}

impl Reads {
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn shut_down(&mut self) {
        for (_, read) in std::mem::take(&mut self.pending) {
            let _ = read.reply.send(Err(ReadError::Shutdown));
        }
    }
}

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    pub(crate) fn submit_read(&mut self, reply: ReadReply, deadline: Instant) {
        self.reads.next_ctx += 1;
        let ctx = self.reads.next_ctx;
        let read = PendingRead {
            reply,
            deadline,
            index: None,
        };
        self.reads.pending.insert(ctx, read);
        self.reads.to_ask.push(ctx);
    }

    /// Asks the core for every read waiting to be asked.
    pub(crate) fn ask_reads(&mut self) {
        for ctx in std::mem::take(&mut self.reads.to_ask) {
            if self.reads.pending.contains_key(&ctx) && self.op.read_index(ctx).is_err() {
                self.reads.retry.push(ctx);
            }
        }
    }

    /// On a tick: reads the core could not start are asked again; expired ones answered.
    pub(crate) fn tick_reads(&mut self, now: Instant) {
        let retry = std::mem::take(&mut self.reads.retry);
        self.reads.to_ask.extend(retry);
        let expired: Vec<u64> = self
            .reads
            .pending
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some(read) = self.reads.pending.remove(&ctx) {
                let _ = read.reply.send(Err(ReadError::Timeout));
            }
        }
    }

    /// The configuration changed: reads not answered yet are asked of the new instance.
    pub(crate) fn reads_restart(&mut self) {
        for (ctx, read) in self.reads.pending.iter_mut() {
            read.index = None;
            self.reads.to_ask.push(*ctx);
        }
        self.reads.retry.clear();
    }

    /// Takes the core's read outcomes and answers the reads this node has decided up to.
    pub(crate) fn settle_reads(&mut self) {
        if self.reads.pending.is_empty() {
            return;
        }
        self.op.take_read_states(&mut self.read_states);
        for state in self.read_states.drain(..) {
            if let Some(read) = self.reads.pending.get_mut(&state.ctx) {
                read.index = Some(state.index);
            }
        }
        self.op.take_read_failures(&mut self.read_failures);
        for failure in self.read_failures.drain(..) {
            if self.reads.pending.contains_key(&failure.ctx) {
                tracing::debug!(ctx = failure.ctx, reason = %failure.reason, "read failed, asking again");
                self.reads.retry.push(failure.ctx);
            }
        }
        let decided = self.op.get_decided_idx();
        let config_id = self.config_id();
        let ready: Vec<u64> = self
            .reads
            .pending
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= decided))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in ready {
            if let Some(read) = self.reads.pending.remove(&ctx) {
                let idx = read.index.unwrap_or(decided);
                let _ = read.reply.send(Ok(ReadPoint { config_id, idx }));
            }
        }
    }
}
