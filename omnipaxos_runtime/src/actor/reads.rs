//! The node's side of linearizable reads: the engine's [`ReadTracker`] (where the rules live)
//! fed from the node's task, with the core asked and read, and its answers sent to the callers.

use super::Actor;
pub use crate::engine::reads::ReadPoint;
use crate::engine::reads::ReadTracker;
use crate::errors::ReadError;
use crate::transport::Transport;
use crate::wire::RuntimeEntry;
use omnipaxos::storage::Storage;
use std::time::Instant;
use tokio::sync::oneshot;

pub(crate) type ReadReply = oneshot::Sender<Result<ReadPoint, ReadError>>;

/// The node's reads: the engine's tracker, answering through channels.
pub(crate) type Reads = ReadTracker<ReadReply>;

impl<T: RuntimeEntry, B: Storage<T> + Send + 'static, Tr: Transport<T>> Actor<T, B, Tr> {
    pub(crate) fn submit_read(&mut self, reply: ReadReply, deadline: Instant) {
        let deadline = self.micros_at(deadline);
        self.reads.submit(reply, deadline);
    }

    /// Asks the core for every read waiting to be asked.
    pub(crate) fn ask_reads(&mut self) {
        let op = &mut self.op;
        self.reads.ask(|ctx| op.read_index(ctx).is_ok());
    }

    /// On a tick: reads the core could not start are asked again; expired ones answered.
    pub(crate) fn tick_reads(&mut self, now: Instant) {
        let now = self.micros_at(now);
        self.reads.tick(now);
        self.deliver_reads();
    }

    /// The configuration changed: reads not answered yet are asked of the new instance.
    pub(crate) fn reads_restart(&mut self) {
        self.reads.restart();
    }

    /// Takes the core's read outcomes and answers the reads this node has decided up to.
    pub(crate) fn settle_reads(&mut self) {
        if self.reads.pending() == 0 {
            return;
        }
        self.op.take_read_states(&mut self.read_states);
        self.op.take_read_failures(&mut self.read_failures);
        let (decided, config_id) = (self.op.get_decided_idx(), self.config_id());
        let ended = self.op.is_reconfigured().is_some();
        self.reads.settle(
            self.read_states.drain(..),
            self.read_failures.drain(..),
            decided,
            config_id,
            ended,
        );
        self.deliver_reads();
    }

    /// Sends the tracker's answers to the callers.
    pub(crate) fn deliver_reads(&mut self) {
        for (reply, result) in self.reads.take_answers() {
            let _ = reply.send(result);
        }
    }
}
