//! The facade's constructors: every way to build an [`OmniPaxos`] instance. They live at the
//! top of the crate, next to `OmniPaxos` itself, so that the configuration and handover types
//! below stay plain data that nothing above them is needed for.

use crate::config::{ClusterConfig, OmniPaxosConfig, ServerConfig};
use crate::errors::ConfigError;
use crate::omni_paxos::OmniPaxos;
use crate::reconfiguration::Handover;
use crate::storage::{Entry, Storage};

impl OmniPaxosConfig {
    /// Validates the configuration and builds the server on `storage`.
    ///
    /// If `storage` holds state from an earlier run (a promise), the server starts in recovery
    /// and resynchronises with the leader by itself.
    pub fn build<T: Entry, B: Storage<T>>(
        self,
        storage: B,
    ) -> Result<OmniPaxos<T, B>, ConfigError> {
        self.validate()?;
        OmniPaxos::new(self, storage)
    }
}

impl ClusterConfig {
    /// Builds server `server_config.pid` of this configuration on `with_storage`; the same as
    /// `OmniPaxosConfig { cluster_config: self, server_config }.build(with_storage)`.
    pub fn build_for_server<T: Entry, B: Storage<T>>(
        self,
        server_config: ServerConfig,
        with_storage: B,
    ) -> Result<OmniPaxos<T, B>, ConfigError> {
        OmniPaxosConfig {
            cluster_config: self,
            server_config,
        }
        .build(with_storage)
    }
}

impl<T: Entry> Handover<T> {
    /// Builds server `server_config.pid` of the next configuration on `storage`.
    pub fn build_for_server<B: Storage<T>>(
        &self,
        server_config: ServerConfig,
        storage: B,
    ) -> Result<OmniPaxos<T, B>, ConfigError> {
        self.next_config()
            .clone()
            .build_for_server(server_config, storage)
    }
}
