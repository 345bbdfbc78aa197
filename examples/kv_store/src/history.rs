//! A linearizability checker for a register per key, for client histories recorded against the
//! service. Each operation has an invocation and a response time; a write whose outcome is
//! unknown (an error or a timeout) may take effect at any point after its invocation, or never.
//! The search (Wing & Gong, memoised on the set of remaining operations and the register value)
//! is exponential in the worst case, so a history per key is limited to 64 operations.

use std::collections::{BTreeMap, HashSet};

/// What a client did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A write of this value; `acknowledged` is false when the client got an error or no answer.
    Write { value: String, acknowledged: bool },
    /// A read that returned this value (`None`: the key did not exist).
    Read { value: Option<String> },
}

/// One operation of a client with its real-time interval (in any monotonic unit).
#[derive(Clone, Debug)]
pub struct Event {
    pub key: String,
    pub op: Op,
    pub invoked: u64,
    /// `None` for an operation whose outcome is unknown.
    pub responded: Option<u64>,
}

/// Checks every key's history; returns the first key that is not linearizable.
pub fn check(events: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e);
    }
    for (key, ops) in by_key {
        if ops.len() > 64 {
            return Err(format!(
                "key {key}: {} operations, the checker handles at most 64",
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

fn linearizable(ops: &[&Event]) -> bool {
    let all: u64 = if ops.len() == 64 {
        u64::MAX
    } else {
        (1u64 << ops.len()) - 1
    };
    let mut failed = HashSet::new();
    search(ops, all, None, &mut failed)
}

/// Whether the operations in `remaining` can be ordered, starting from register `value`.
fn search(
    ops: &[&Event],
    remaining: u64,
    value: Option<&str>,
    failed: &mut HashSet<(u64, Option<String>)>,
) -> bool {
    // Done when only operations that may never have happened are left.
    let must_happen =
        (0..ops.len()).any(|i| remaining & (1 << i) != 0 && ops[i].responded.is_some());
    if !must_happen {
        return true;
    }
    let state = (remaining, value.map(str::to_string));
    if failed.contains(&state) {
        return false;
    }
    // An operation can go first if no other remaining operation responded before it was invoked.
    let earliest_response = (0..ops.len())
        .filter(|i| remaining & (1 << i) != 0)
        .filter_map(|i| ops[i].responded)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..ops.len() {
        if remaining & (1 << i) == 0 || ops[i].invoked > earliest_response {
            continue;
        }
        let rest = remaining & !(1 << i);
        let ok = match &ops[i].op {
            Op::Write { value: v, .. } => search(ops, rest, Some(v), failed),
            Op::Read { value: seen } => {
                seen.as_deref() == value && search(ops, rest, value, failed)
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
        }
    }

    fn r(key: &str, v: Option<&str>, a: u64, b: u64) -> Event {
        Event {
            key: key.into(),
            op: Op::Read {
                value: v.map(String::from),
            },
            invoked: a,
            responded: Some(b),
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
