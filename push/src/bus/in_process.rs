//! The bus of a single node: the hub itself.

use std::hash::Hash;
use std::sync::Arc;

use super::NodeBus;
use crate::codec::EncodedFrame;
use crate::hub::Hub;

/// A publish is a hub publish: nothing is added to the single-node hot path (callers that
/// name `Hub` as their bus type dispatch to it statically).
impl<K: Eq + Hash + Clone + Send + Sync + 'static> NodeBus<K> for Hub<K> {
    fn publish(&self, key: &K, from: u64, to: u64, frame: &Arc<EncodedFrame>) {
        Hub::publish(self, key, from, to, frame);
    }
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::ServerFrame;

    use super::*;
    use crate::outbox::Outbox;

    #[test]
    fn publishing_through_the_hub_as_a_bus_reaches_its_subscribers() {
        let hub = Hub::<u64>::new();
        let (outbox, rx) = Outbox::for_test(8);
        let subscription = hub.subscribe(1, outbox);
        assert!(subscription.go_live(0));
        let bus: Arc<dyn NodeBus<u64>> = hub.clone();
        bus.publish(&1, 1, 1, &EncodedFrame::new(ServerFrame::default()));
        assert_eq!(rx.len(), 1);
    }
}
