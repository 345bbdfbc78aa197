//! What nodes send each other: the protocol's messages tagged with their configuration, and the
//! runtime's own requests (appends on behalf of another node, their outcomes, handovers).

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::messages::Message;
use omnipaxos::reconfiguration::Handover;
use omnipaxos::storage::Entry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The node ids of the core.
pub type NodeId = omnipaxos::util::NodeId;

/// What an entry type needs to travel between nodes and live on the node's own thread.
pub trait RuntimeEntry:
    Entry<Snapshot: Send + Sync> + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T> RuntimeEntry for T where
    T: Entry<Snapshot: Send + Sync> + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// One message between two nodes' runtimes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "T: RuntimeEntry")]
pub enum WireMessage<T: Entry> {
    /// A message of the protocol instance of configuration `config_id`.
    Protocol {
        /// The configuration the message belongs to.
        config_id: u32,
        /// The message.
        msg: Message<T>,
    },
    /// Entries for the leader of `ballot` to append, each with its request number at the sender.
    Append {
        /// The sender's incarnation (see [`WireMessage::Hello`]).
        incarnation: u64,
        /// The ballot of the leader the sender believes in; only that leader takes them.
        ballot: Ballot,
        /// The entries, by request number.
        entries: Vec<(u64, T)>,
    },
    /// What happened to entries sent with [`WireMessage::Append`], by request number.
    AppendOutcome {
        /// The incarnation of the runtime that answers.
        incarnation: u64,
        /// The outcomes.
        outcomes: Vec<(u64, RemoteOutcome)>,
    },
    /// Sent once on every new connection: the sender's incarnation, random per start, so that a
    /// peer can tell a restart (and that no answer from the previous life will come).
    Hello {
        /// The sender's incarnation.
        incarnation: u64,
    },
    /// A joining node asks for the handover of the configuration that ended with its own.
    HandoverRequest {
        /// The configuration the joiner belongs to.
        next_config_id: u32,
    },
    /// The answer to [`WireMessage::HandoverRequest`].
    Handover {
        /// The id of the configuration that ended.
        config_id: u32,
        /// The ended configuration's handover.
        handover: Box<Handover<T>>,
    },
}

/// What happened to appended entries at the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteOutcome {
    /// Decided at `idx`.
    Decided {
        /// The entry's index.
        idx: usize,
    },
    /// Not taken: the receiver does not lead the ballot (any more), nor could it relay to the
    /// leader. Never appended.
    NotLeader,
    /// Its fate is unknown: placed at `idx` (when known) by a leader whose ballot ended before
    /// it was decided, or lost on the way by a node that relayed it. It may still be decided.
    InDoubt {
        /// The entry's index, if known.
        idx: Option<usize>,
    },
    /// The log is sealed by a reconfiguration. Never appended.
    Sealed,
    /// Refused for another reason (a failed storage). Never appended.
    Rejected(String),
}

impl<T: Entry> WireMessage<T> {
    /// A short name of the message's kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WireMessage::Protocol { msg, .. } => protocol_kind(msg),
            WireMessage::Append { .. } => "Append",
            WireMessage::AppendOutcome { .. } => "AppendOutcome",
            WireMessage::Hello { .. } => "Hello",
            WireMessage::HandoverRequest { .. } => "HandoverRequest",
            WireMessage::Handover { .. } => "Handover",
        }
    }
}

fn protocol_kind<T: Entry>(msg: &Message<T>) -> &'static str {
    match msg {
        Message::BLE(_) => "Heartbeat",
        Message::SequencePaxos(m) => match &m.msg {
            PaxosMsg::PrepareReq(_) => "PrepareReq",
            PaxosMsg::Prepare(_) => "Prepare",
            PaxosMsg::Promise(_) => "Promise",
            PaxosMsg::AcceptSync(_) => "AcceptSync",
            PaxosMsg::AcceptDecide(_) => "AcceptDecide",
            PaxosMsg::Accepted(_) => "Accepted",
            PaxosMsg::NotAccepted(_) => "NotAccepted",
            PaxosMsg::Decide(_) => "Decide",
            PaxosMsg::ProposalForward(_) | PaxosMsg::ForwardedEntries(_) => "ProposalForward",
            PaxosMsg::Compaction(_) => "Compaction",
            PaxosMsg::AcceptStopSign(_) => "AcceptStopSign",
            PaxosMsg::ForwardStopSign(_) => "ForwardStopSign",
            PaxosMsg::ReadIndexReq(_) => "ReadIndexReq",
            PaxosMsg::ReadIndexResp(_) => "ReadIndexResp",
            PaxosMsg::ReadConfirm(_) => "ReadConfirm",
            PaxosMsg::ReadConfirmed(_) => "ReadConfirmed",
        },
    }
}

/// Encodes a message for the wire (bincode, standard configuration).
pub fn encode<T: RuntimeEntry>(msg: &WireMessage<T>, out: &mut Vec<u8>) -> Result<(), String> {
    bincode::serde::encode_into_std_write(msg, out, bincode::config::standard())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Memory a decoded message may claim: a malformed length prefix can never make the decoder
/// reserve more than this. Also the largest `max_message_bytes` allowed.
pub const DECODE_LIMIT: usize = 1 << 30;

/// Decodes a message; the whole of `bytes` must be one message.
pub fn decode<T: RuntimeEntry>(bytes: &[u8]) -> Result<WireMessage<T>, String> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (msg, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(msg)
}

/// A random non-zero number, different in every call and every process: for identities that
/// must not repeat across restarts (the runtime's incarnations, an application's sessions).
pub fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish().max(1)
}
