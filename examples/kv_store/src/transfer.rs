//! State transfer in chunks: how a node whose log starts after a compacted prefix it never
//! applied (a follower that was down while the others compacted, a node that joins in a
//! reconfiguration) gets the state.
//!
//! The copy is **fuzzy**: the donor keeps applying writes while it is read, so the keys come
//! from different positions of its history. That is enough because the receiver then replays
//! its own log from where the copy started:
//! - the first chunk carries the donor's position `S0` (at least the position the receiver
//!   needs) and its sessions at exactly `S0`;
//! - every later chunk holds the keys after a cursor, read from a donor (any node: the
//!   transfer resumes with another one) at a position of at least `S0`, so each key holds its
//!   value at some position from `S0` on;
//! - the receiver replays its log after `S0`: every key changed after `S0` ends with its last
//!   write in log order, whatever the copy held, and every other key held the same value
//!   throughout. The sessions at `S0` make the replay's choices about retried copies the same
//!   as the donor's.
//!
//! A chunk is one HTTP request (`POST /state/chunk`) whose answer has at most `max_bytes` bytes
//! (one key larger than that travels alone). A failed request is asked again after the same
//! cursor (from the same or another donor), and the progress is recorded durably every 16 MiB
//! ([`TransferProgress`]), so a transfer resumes after a broken connection, a donor that went
//! away, or a restart of the receiver.

use crate::machine::Sessions;
use crate::state_store::{Position, Recovery, StateStore, TransferProgress};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Default size limit of one chunk (the answer's body).
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;
/// The largest chunk a donor sends, whatever is asked.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;
/// The progress is recorded durably (a sync of the copied keys and of the record) once this
/// much was copied since the last time, and at the end: a restart copies at most this much
/// again.
const RECORD_EVERY_BYTES: u64 = 16 << 20;
/// Pause after every donor failed once, before the next round.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long one chunk request may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the receiver asks a donor for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The keys after this one (from the first key if `None`).
    pub after: Option<String>,
    /// The donor must be at least at this position (else it refuses).
    pub min: Position,
    /// Send the sessions and the position they belong to (the first chunk).
    pub with_sessions: bool,
    /// Size limit of the answer's body.
    pub max_bytes: usize,
}

/// A donor's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChunk {
    /// The donor's position when it started reading the chunk.
    pub position: Position,
    /// The donor's sessions at `position`, if asked for.
    pub sessions: Option<Sessions>,
    /// Keys in order, all after the request's `after`.
    pub entries: Vec<(String, String)>,
    /// No key follows the last one.
    pub last: bool,
    /// The donor's position once the chunk was read: its keys hold no write after it.
    #[serde(default)]
    pub until: Option<Position>,
    /// Size of the body it came in (set by the receiver).
    #[serde(skip)]
    pub body_bytes: usize,
}

/// Encodes a chunk of `entries` (taken from the iterator as long as the body stays within
/// `max_bytes`; at least one) as JSON, exactly as [`StateChunk`] reads it.
pub fn encode_chunk(
    position: Position,
    sessions: Option<&Sessions>,
    entries: &mut dyn Iterator<Item = Result<(String, String), String>>,
    max_bytes: usize,
    until: &dyn Fn() -> Position,
) -> Result<Vec<u8>, String> {
    let header = serde_json::to_string(&position).and_then(|p| {
        let s = serde_json::to_string(&sessions)?;
        Ok(format!("{{\"position\":{p},\"sessions\":{s},\"entries\":["))
    });
    let mut body = header.map_err(|e| e.to_string())?.into_bytes();
    const TAIL: usize = r#"],"last":false,"until":[4294967295,18446744073709551615]}"#.len();
    let mut last = true;
    let mut first = true;
    for entry in entries {
        let encoded = serde_json::to_vec(&entry?).map_err(|e| e.to_string())?;
        let separator = usize::from(!first);
        if !first && body.len() + separator + encoded.len() + TAIL > max_bytes {
            last = false;
            break;
        }
        if !first {
            body.push(b',');
        }
        body.extend_from_slice(&encoded);
        first = false;
    }
    // The key that did not fit was read; it is the first of the next chunk. Whether more keys
    // follow the ones sent is all that is needed here.
    let (config, idx) = until();
    body.extend_from_slice(format!("],\"last\":{last},\"until\":[{config},{idx}]}}").as_bytes());
    Ok(body)
}

/// Where chunks come from.
pub trait Donors {
    /// One chunk, from any donor; retries (with other donors) until one answers.
    fn fetch(
        &mut self,
        request: &ChunkRequest,
    ) -> impl std::future::Future<Output = StateChunk> + Send;
}

/// What a transfer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    /// Where the copy started: the log is replayed after it.
    pub start: Position,
    pub chunks: u64,
    pub keys: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// The largest chunk's body.
    pub largest_chunk: usize,
    /// The keys may hold writes up to this position (the donors' when they read the chunks):
    /// they are exactly the state of a position only from there on.
    pub until: Position,
}

/// Copies the state into `store` from `donors`, starting or resuming `progress`; returns the
/// sessions at the start position and what was copied. The copied keys and the progress are
/// made durable every `RECORD_EVERY_BYTES` and at the end.
pub async fn receive(
    store: &StateStore,
    mut progress: TransferProgress,
    donors: &mut impl Donors,
    max_bytes: usize,
) -> Result<(Sessions, TransferReport), String> {
    let fresh = progress.start.is_none();
    let (record, clear) = (Recovery::Transfer(progress.clone()), store.clone());
    blocking(move || {
        clear.record(&record)?;
        if fresh {
            clear.clear()?;
        }
        Ok(())
    })
    .await?;
    let mut report = TransferReport::default();
    let mut unrecorded = 0u64;
    loop {
        let request = ChunkRequest {
            after: progress.cursor.clone(),
            min: progress.start.as_ref().map_or(progress.needed, |s| s.0),
            with_sessions: progress.start.is_none(),
            max_bytes,
        };
        let chunk = donors.fetch(&request).await;
        if progress.start.is_none() {
            match chunk.sessions {
                Some(sessions) if chunk.position >= progress.needed => {
                    progress.start = Some((chunk.position, sessions))
                }
                _ => {
                    tracing::warn!("a donor's first chunk had no sessions or was behind");
                    continue;
                }
            }
        }
        if let Some((key, _)) = chunk.entries.last() {
            progress.cursor = Some(key.clone());
        }
        progress.until = progress.until.max(chunk.until);
        report.chunks += 1;
        report.largest_chunk = report.largest_chunk.max(chunk.body_bytes);
        report.keys += chunk.entries.len() as u64;
        let bytes: u64 = chunk
            .entries
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        report.bytes += bytes;
        unrecorded += bytes;
        let record = (unrecorded >= RECORD_EVERY_BYTES || chunk.last)
            .then(|| Recovery::Transfer(progress.clone()));
        if record.is_some() {
            unrecorded = 0;
        }
        let writer = store.clone();
        blocking(move || {
            writer.put_all(chunk.entries)?;
            match record {
                Some(record) => writer.record(&record),
                None => Ok(()),
            }
        })
        .await?;
        if chunk.last {
            break;
        }
    }
    let Some((start, sessions)) = progress.start else {
        return Err("a transfer ended without a start".into());
    };
    report.start = start;
    report.until = progress.until.unwrap_or(start).max(start);
    let (record, writer) = (
        Recovery::Checkpoint {
            position: start,
            sessions: sessions.clone(),
        },
        store.clone(),
    );
    blocking(move || writer.record(&record)).await?;
    Ok((sessions, report))
}

/// Runs `f` on Tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> Result<R, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("state store task: {e}"))?
}

/// The other nodes' HTTP APIs as donors, tried in turn; a donor that answered is asked again
/// first.
pub struct HttpDonors {
    donors: Vec<(u64, SocketAddr)>,
    next: usize,
    /// This node's client: its node certificate is what lets it fetch chunks.
    client: crate::client::Client,
    /// Told when no node can be asked: this node cannot catch up.
    health: Option<std::sync::Arc<crate::health::Health>>,
}

impl HttpDonors {
    pub fn new(donors: Vec<(u64, SocketAddr)>, client: crate::client::Client) -> Self {
        Self {
            donors,
            next: 0,
            client,
            health: None,
        }
    }

    /// Reports to `health` when no node can be asked.
    pub fn reporting_to(mut self, health: std::sync::Arc<crate::health::Health>) -> Self {
        self.health = Some(health);
        self
    }

    fn ask(
        client: &crate::client::Client,
        addr: SocketAddr,
        request: &ChunkRequest,
    ) -> Result<StateChunk, String> {
        let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let (status, bytes) = client
            .request_bytes(addr, "POST", "/state/chunk", &body, CHUNK_TIMEOUT)
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        let mut chunk: StateChunk =
            serde_json::from_slice(&bytes).map_err(|e| format!("a malformed chunk: {e}"))?;
        chunk.body_bytes = bytes.len();
        Ok(chunk)
    }
}

impl Donors for HttpDonors {
    async fn fetch(&mut self, request: &ChunkRequest) -> StateChunk {
        let mut round: u64 = 0;
        loop {
            if self.donors.is_empty() && round.is_multiple_of(50) {
                let cause = "a state transfer is needed but no other node's HTTP address is \
                             known ([http_peers] in the config file)";
                match &self.health {
                    Some(health) => health.fail(crate::health::FaultKind::CannotCatchUp, cause),
                    None => tracing::error!("{cause}"),
                }
            }
            for _ in 0..self.donors.len() {
                let (pid, addr) = self.donors[self.next % self.donors.len()];
                let asked = request.clone();
                let client = self.client.for_node(pid);
                let answer = tokio::task::spawn_blocking(move || Self::ask(&client, addr, &asked))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                match answer {
                    Ok(chunk) => return chunk,
                    Err(e) => {
                        tracing::info!(pid, "state chunk not served: {e}");
                        self.next += 1;
                    }
                }
            }
            round += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{KvCommand, RequestId, Write, WriteOp};
    use crate::machine::KeyValues;
    use std::collections::{BTreeMap, VecDeque};

    /// Donors served from a map, as a donor at `position` would; `failures` says which
    /// requests fail (a broken connection: the receiver must ask again).
    struct FakeDonors {
        position: Position,
        sessions: Sessions,
        keys: BTreeMap<String, String>,
        failures: VecDeque<bool>,
        asked: Vec<ChunkRequest>,
    }

    impl FakeDonors {
        fn answer(&self, r: &ChunkRequest) -> StateChunk {
            let mut entries = self
                .keys
                .iter()
                .filter(|(k, _)| r.after.as_ref().is_none_or(|a| *k > a))
                .map(|(k, v)| Ok((k.clone(), v.clone())));
            let sessions = r.with_sessions.then_some(&self.sessions);
            let position = self.position;
            let body =
                encode_chunk(position, sessions, &mut entries, r.max_bytes, &|| position).unwrap();
            assert!(body.len() <= r.max_bytes, "a chunk of {} bytes", body.len());
            let mut chunk: StateChunk = serde_json::from_slice(&body).unwrap();
            chunk.body_bytes = body.len();
            chunk
        }
    }

    impl Donors for FakeDonors {
        async fn fetch(&mut self, request: &ChunkRequest) -> StateChunk {
            loop {
                self.asked.push(request.clone());
                if !self.failures.pop_front().unwrap_or(false) {
                    return self.answer(request);
                }
            }
        }
    }

    fn donor_state() -> (Sessions, BTreeMap<String, String>) {
        let mut sessions = Sessions::default();
        let mut keys = BTreeMap::new();
        let mut map = std::collections::HashMap::new();
        for seq in 1..=40u64 {
            let cmd = KvCommand::Write(Write {
                id: RequestId {
                    node: 2,
                    life: 5,
                    seq,
                },
                done_below: seq,
                by: None,
                op: WriteOp::Put {
                    key: format!("key-{seq:03}"),
                    value: "v".repeat(seq as usize * 10),
                },
            });
            let auth = &mut crate::auth::AuthState::default();
            sessions.apply(&mut map, auth, cmd).unwrap();
        }
        keys.extend(map);
        (sessions, keys)
    }

    #[tokio::test]
    async fn a_transfer_copies_every_key_in_bounded_chunks_and_resumes_after_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        store
            .put("stale".into(), "gone after the copy".into())
            .unwrap();
        let (sessions, keys) = donor_state();
        let mut donors = FakeDonors {
            position: (1, 900),
            sessions: sessions.clone(),
            keys: keys.clone(),
            // The second and the fifth request fail.
            failures: [false, true, false, false, true].into_iter().collect(),
            asked: Vec::new(),
        };
        let progress = TransferProgress {
            needed: (1, 800),
            start: None,
            cursor: None,
            until: None,
        };
        let (got, report) = receive(&store, progress, &mut donors, 1_000).await.unwrap();
        assert_eq!(got, sessions);
        assert_eq!(report.start, (1, 900));
        assert!(report.chunks > 5, "{report:?}");
        assert!(report.largest_chunk > 500 && report.largest_chunk <= 1_000);
        let copied: BTreeMap<String, String> = store.keys_after(None).map(Result::unwrap).collect();
        assert_eq!(copied, keys, "every key, and nothing that was there before");
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        let reopened: BTreeMap<String, String> =
            store.keys_after(None).map(Result::unwrap).collect();
        assert_eq!(
            reopened, keys,
            "the copied chunks are read back from the files"
        );
        // A failed request is asked again as it was: nothing skipped, nothing asked twice
        // once answered.
        for pair in donors.asked.windows(2) {
            if pair[0].after == pair[1].after {
                assert_eq!(pair[0], pair[1]);
            }
        }
        assert!(donors.asked[1..].iter().all(|r| r.min == (1, 900)));
        assert_eq!(
            store.recovery().unwrap(),
            Some(Recovery::Checkpoint {
                position: (1, 900),
                sessions
            })
        );
    }

    #[tokio::test]
    async fn a_transfer_interrupted_by_a_restart_resumes_after_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, keys) = donor_state();
        let mut donors = FakeDonors {
            position: (2, 10),
            sessions: sessions.clone(),
            keys: keys.clone(),
            failures: VecDeque::new(),
            asked: Vec::new(),
        };
        // What a receiver had recorded when it stopped: half the keys copied.
        let cursor = keys.keys().nth(19).cloned();
        {
            let mut store = StateStore::open(dir.path()).unwrap();
            for (k, v) in keys.iter().take(20) {
                store.put(k.clone(), v.clone()).unwrap();
            }
            let progress = TransferProgress {
                needed: (2, 3),
                start: Some(((2, 10), sessions.clone())),
                cursor: cursor.clone(),
                until: None,
            };
            store.record(&Recovery::Transfer(progress)).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let Some(Recovery::Transfer(progress)) = store.recovery().unwrap() else {
            panic!("the transfer was recorded");
        };
        let (_, report) = receive(&store, progress, &mut donors, 100_000)
            .await
            .unwrap();
        assert_eq!(donors.asked[0].after, cursor, "resumed after the cursor");
        assert!(!donors.asked[0].with_sessions);
        assert_eq!(report.keys, 20, "only the keys not copied before");
        let copied: BTreeMap<String, String> = store.keys_after(None).map(Result::unwrap).collect();
        assert_eq!(copied, keys);
    }
}
