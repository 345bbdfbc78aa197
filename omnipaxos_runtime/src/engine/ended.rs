//! The configurations a node ran and ended. Each keeps running, sealed, for the nodes that have
//! not learnt its end yet: a node that was down while the cluster moved on twice restarts in a
//! configuration that only its peers' ended instances can finish for it (their answers carry
//! the decided StopSign). An ended configuration stops running once every other node of it has
//! been heard from in a later configuration; it then only keeps its log for subscribers.

use crate::wire::{NodeId, RuntimeEntry};
use omnipaxos::messages::Message;
use omnipaxos::storage::Storage;
use omnipaxos::OmniPaxos;
use std::collections::BTreeMap;

/// A node's ended configurations, oldest first, and the newest configuration each peer was
/// heard from in.
pub(crate) struct EndedConfigs<T: RuntimeEntry, B: Storage<T>> {
    me: NodeId,
    instances: Vec<OmniPaxos<T, B>>,
    newest_heard: BTreeMap<NodeId, u32>,
}

fn config_of<T: RuntimeEntry, B: Storage<T>>(op: &OmniPaxos<T, B>) -> u32 {
    op.get_config().cluster_config.configuration_id
}

impl<T: RuntimeEntry, B: Storage<T>> EndedConfigs<T, B> {
    /// None yet, on node `me`.
    pub(crate) fn new(me: NodeId) -> Self {
        Self {
            me,
            instances: Vec::new(),
            newest_heard: BTreeMap::new(),
        }
    }

    /// The node moved past `ended`.
    pub(crate) fn push(&mut self, ended: OmniPaxos<T, B>) {
        self.instances.push(ended);
    }

    /// Every ended configuration's instance, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &OmniPaxos<T, B>> {
        self.instances.iter()
    }

    /// `from` sent a message of configuration `config_id`: it has reached that one.
    pub(crate) fn heard(&mut self, from: NodeId, config_id: u32) {
        let newest = self.newest_heard.entry(from).or_insert(config_id);
        *newest = (*newest).max(config_id);
    }

    /// Whether some other node of `op`'s configuration may still be in it.
    fn needed(me: NodeId, newest_heard: &BTreeMap<NodeId, u32>, op: &OmniPaxos<T, B>) -> bool {
        let config_id = config_of(op);
        op.get_config()
            .cluster_config
            .nodes
            .iter()
            .filter(|&&pid| pid != me)
            .any(|pid| newest_heard.get(pid).map_or(true, |n| *n <= config_id))
    }

    /// The instances still running (called every pass: nothing allocated).
    fn running(&mut self) -> impl Iterator<Item = &mut OmniPaxos<T, B>> {
        let (me, newest_heard) = (self.me, &self.newest_heard);
        self.instances
            .iter_mut()
            .filter(move |op| Self::needed(me, newest_heard, op))
    }

    /// A tick for every running instance.
    pub(crate) fn tick(&mut self) {
        self.running().for_each(|op| op.tick());
    }

    /// The connection to `pid` came back up.
    pub(crate) fn reconnected(&mut self, pid: NodeId) {
        self.running().for_each(|op| op.reconnected(pid));
    }

    /// A protocol message of configuration `config_id`; `false` if no ended instance runs it.
    pub(crate) fn handle(&mut self, config_id: u32, msg: Message<T>) -> bool {
        match self.running().find(|op| config_of(op) == config_id) {
            Some(op) => {
                op.handle_incoming(msg);
                true
            }
            None => false,
        }
    }

    /// The running instances' messages, each with its configuration's id.
    pub(crate) fn take_outgoing(&mut self, out: &mut Vec<(u32, Message<T>)>) {
        let mut messages = Vec::new();
        for op in self.running() {
            let config_id = config_of(op);
            op.take_outgoing_messages(&mut messages);
            out.extend(messages.drain(..).map(|m| (config_id, m)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EndedConfigs;
    use omnipaxos::messages::Message;
    use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
    use omnipaxos_storage::memory_storage::MemoryStorage;

    type Op = OmniPaxos<u64, MemoryStorage<u64>>;

    /// Node 1's instance of configuration `config_id` of nodes 1, 2, 3.
    fn instance(config_id: u32) -> Op {
        let cluster = ClusterConfig {
            configuration_id: config_id,
            nodes: vec![1, 2, 3],
            ..Default::default()
        };
        let server = ServerConfig {
            pid: 1,
            ..Default::default()
        };
        cluster
            .build_for_server(server, MemoryStorage::default())
            .expect("valid")
    }

    /// The configurations whose instances send heartbeats after a tick.
    fn sending(ended: &mut EndedConfigs<u64, MemoryStorage<u64>>) -> Vec<u32> {
        ended.tick();
        let mut out: Vec<(u32, Message<u64>)> = Vec::new();
        ended.take_outgoing(&mut out);
        let mut ids: Vec<u32> = out.into_iter().map(|(id, _)| id).collect();
        ids.dedup();
        ids
    }

    #[test]
    fn every_ended_configuration_runs_while_a_peer_may_still_be_in_it() {
        let mut ended = EndedConfigs::new(1);
        ended.push(instance(1));
        ended.push(instance(2));
        assert_eq!(sending(&mut ended), [1, 2], "not only the last one");
    }

    #[test]
    fn an_ended_configuration_stops_once_every_other_node_was_heard_in_a_later_one() {
        let mut ended = EndedConfigs::new(1);
        ended.push(instance(1));
        ended.push(instance(2));
        ended.heard(2, 3);
        assert_eq!(sending(&mut ended), [1, 2], "node 3 may still be behind");
        ended.heard(3, 2);
        assert_eq!(
            sending(&mut ended),
            [2],
            "both are past 1; node 3 may still be in 2"
        );
        ended.heard(3, 3);
        assert!(sending(&mut ended).is_empty());
        assert_eq!(ended.iter().count(), 2, "their logs stay for subscribers");
    }

    #[test]
    fn a_message_reaches_the_ended_instance_of_its_configuration_only_while_it_runs() {
        let mut ended = EndedConfigs::new(1);
        ended.push(instance(1));
        let mut peer = instance(1);
        // Any message of configuration 1 will do: node 1's own heartbeat to itself is refused
        // by the instance but reaches it.
        peer.tick();
        let mut out = Vec::new();
        peer.take_outgoing_messages(&mut out);
        let msg = out.pop().expect("a heartbeat");
        assert!(ended.handle(1, msg.clone()));
        assert!(
            !ended.handle(2, msg.clone()),
            "no instance of configuration 2"
        );
        ended.heard(2, 2);
        ended.heard(3, 2);
        assert!(
            !ended.handle(1, msg),
            "nobody needs configuration 1 any more"
        );
    }
}
