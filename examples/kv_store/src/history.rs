//! A linearizability checker for a register per key, for client histories recorded against the
//! service. Each operation has an invocation and a response time; a write whose outcome is
//! unknown (an error or a timeout) may take effect at any point after its invocation, or never.
//! The search (Wing & Gong, memoised on the set of remaining operations and the register value)
//! is exponential in the worst case, so a history per key is limited to 128 operations.

use std::collections::{BTreeMap, HashSet};

/// What a client did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A write of this value; `acknowledged` is false when the client got an error or no answer.
    Write { value: String, acknowledged: bool },
    /// A read that returned this value (`None`: the key did not exist).
    Read { value: Option<String> },
    /// A delete; `existed` is what it answered (`None`: no answer, it may or may not happen).
    Delete { existed: Option<bool> },
}

/// One operation of a client with its real-time interval (in any monotonic unit).
#[derive(Clone, Debug)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub invoked: u64,
    /// `None` for an operation whose outcome is unknown.
    pub responded: Option<u64>,
    /// The node that answered (0: unknown), to tell where a violation came from.
    pub node: u64,
}

/// Checks every key's history; returns the first key that is not linearizable.
pub fn check(events: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e);
    }
    for (key, ops) in by_key {
        if ops.len() > MAX_OPS {
            return Err(format!(
                "key {key}: {} operations, the checker handles at most {MAX_OPS}",
                ops.len()
            ));
        }
        if !linearizable(&ops) {
            return Err(format!(
                "key {key}: the history is not linearizable: {ops:#?}"
            ));
        }
    }
    Ok(())
}

/// Operations per key the checker takes (the bits of its set of remaining operations).
const MAX_OPS: usize = 128;

fn linearizable(ops: &[&Event]) -> bool {
    let all: u128 = if ops.len() == MAX_OPS {
        u128::MAX
    } else {
        (1u128 << ops.len()) - 1
    };
    let mut failed = HashSet::new();
    search(ops, all, None, &mut failed)
}

/// Whether the operations in `remaining` can be ordered, starting from register `value`.
fn search(
    ops: &[&Event],
    remaining: u128,
    value: Option<&str>,
    failed: &mut HashSet<(u128, Option<String>)>,
) -> bool {
    // Done when only operations that may never have happened are left.
    let must_happen =
        (0..ops.len()).any(|i| remaining & (1u128 << i) != 0 && ops[i].responded.is_some());
    if !must_happen {
        return true;
    }
    let state = (remaining, value.map(str::to_string));
    if failed.contains(&state) {
        return false;
    }
    // An operation can go first if no other remaining operation responded before it was invoked.
    let earliest_response = (0..ops.len())
        .filter(|i| remaining & (1u128 << i) != 0)
        .filter_map(|i| ops[i].responded)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..ops.len() {
        if remaining & (1u128 << i) == 0 || ops[i].invoked > earliest_response {
            continue;
        }
        let rest = remaining & !(1u128 << i);
        let ok = match &ops[i].op {
            Op::Write { value: v, .. } => search(ops, rest, Some(v), failed),
            Op::Read { value: seen } => {
                seen.as_deref() == value && search(ops, rest, value, failed)
            }
            Op::Delete { existed } => {
                existed.is_none_or(|e| e == value.is_some()) && search(ops, rest, None, failed)
            }
        };
        if ok {
            return true;
        }
    }
    failed.insert(state);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, v: &str, a: u64, b: Option<u64>) -> Event {
        Event {
            key: key.into(),
            op: Op::Write {
                value: v.into(),
                acknowledged: b.is_some(),
            },
            invoked: a,
            responded: b,
            node: 0,
        }
    }

    fn d(key: &str, existed: Option<bool>, a: u64, b: Option<u64>) -> Event {
        Event {
            key: key.into(),
            op: Op::Delete { existed },
            invoked: a,
            responded: b,
            node: 0,
        }
    }

    #[test]
    fn deletes_answer_whether_the_key_existed() {
        let h = vec![
            w("k", "1", 0, Some(10)),
            d("k", Some(true), 11, Some(12)),
            r("k", None, 13, 14),
            d("k", Some(false), 15, Some(16)),
        ];
        assert!(check(&h).is_ok());
        let h = vec![w("k", "1", 0, Some(10)), d("k", Some(false), 11, Some(12))];
        assert!(check(&h).is_err(), "the key existed");
        let h = vec![
            w("k", "1", 0, Some(10)),
            d("k", None, 11, None),
            r("k", Some("1"), 12, 13),
            r("k", None, 14, 15),
        ];
        assert!(check(&h).is_ok(), "an unanswered delete may happen late");
    }

    fn r(key: &str, v: Option<&str>, a: u64, b: u64) -> Event {
        Event {
            key: key.into(),
            op: Op::Read {
                value: v.map(String::from),
            },
            invoked: a,
            responded: Some(b),
            node: 0,
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let h = vec![
            w("k", "1", 0, Some(10)),
            r("k", Some("1"), 11, 12),
            w("k", "2", 5, Some(20)),
            r("k", Some("2"), 21, 22),
        ];
        assert!(check(&h).is_ok());
        // Concurrent writes: the read may see either.
        let h = vec![
            w("k", "1", 0, Some(10)),
            w("k", "2", 0, Some(10)),
            r("k", Some("1"), 11, 12),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_fails() {
        let h = vec![w("k", "1", 0, Some(10)), r("k", None, 11, 12)];
        assert!(check(&h).is_err());
        let h = vec![
            w("k", "1", 0, Some(10)),
            w("k", "2", 11, Some(20)),
            r("k", Some("1"), 21, 22),
        ];
        assert!(check(&h).is_err(), "reads must not go back in time");
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_happen() {
        let h = vec![
            w("k", "1", 0, None),
            r("k", None, 5, 6),
            r("k", Some("1"), 7, 8),
        ];
        assert!(check(&h).is_ok());
        let h = vec![
            w("k", "1", 0, None),
            r("k", Some("1"), 5, 6),
            r("k", None, 7, 8),
        ];
        assert!(check(&h).is_err(), "once seen, it happened");
    }
}
