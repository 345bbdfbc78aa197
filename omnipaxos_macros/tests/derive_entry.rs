//! `#[derive(Entry)]`: the default snapshot, `#[snapshot(T)]`, generics, and compile errors for
//! misuse (checked with trybuild against the messages in `tests/ui/*.stderr`).

use omnipaxos::macros::Entry;
use omnipaxos::storage::{Entry as EntryTrait, NoSnapshot, Snapshot};
use std::any::TypeId;

#[derive(Clone, Debug, Entry)]
pub struct KeyValue {
    pub key: String,
    pub value: u64,
}

// Serde because the `serde` feature (on whenever `omnipaxos_storage` is in the build) requires
// snapshots to travel in messages.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sum(u64);

impl Snapshot<Counter> for Sum {
    fn create(entries: &[Counter]) -> Self {
        Sum(entries.iter().map(|c| c.0).sum())
    }
    fn merge(&mut self, delta: Self) {
        self.0 += delta.0;
    }
    fn use_snapshots() -> bool {
        true
    }
}

#[derive(Clone, Debug, Entry)]
#[snapshot(Sum)]
pub struct Counter(u64);

#[derive(Clone, Debug, Entry)]
pub enum Command<K: Clone + std::fmt::Debug> {
    Put(K),
    Delete,
}

fn snapshot_of<T: EntryTrait>() -> TypeId
where
    T::Snapshot: 'static,
{
    TypeId::of::<T::Snapshot>()
}

#[test]
fn default_snapshot_is_no_snapshot() {
    assert_eq!(snapshot_of::<KeyValue>(), TypeId::of::<NoSnapshot>());
    assert_eq!(snapshot_of::<Command<String>>(), TypeId::of::<NoSnapshot>());
}

#[test]
fn snapshot_attribute_sets_the_snapshot_type() {
    assert_eq!(snapshot_of::<Counter>(), TypeId::of::<Sum>());
    let s = <Counter as EntryTrait>::Snapshot::create(&[Counter(2), Counter(3)]);
    assert_eq!(s, Sum(5));
}

#[test]
fn misuse_is_a_compile_error_with_a_clear_message() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
