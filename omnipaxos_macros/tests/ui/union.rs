use omnipaxos::macros::Entry;

#[derive(Clone, Copy, Entry)]
union Bits {
    a: u32,
    b: f32,
}

fn main() {}
