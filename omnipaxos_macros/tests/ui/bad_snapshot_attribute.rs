use omnipaxos::macros::Entry;

#[derive(Clone, Debug, Entry)]
#[snapshot = "Sum"]
struct Counter(u64);

fn main() {}
