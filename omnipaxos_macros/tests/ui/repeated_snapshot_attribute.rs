use omnipaxos::macros::Entry;

#[derive(Clone, Debug, Entry)]
#[snapshot(omnipaxos::storage::NoSnapshot)]
#[snapshot(omnipaxos::storage::NoSnapshot)]
struct Counter(u64);

fn main() {}
