//! L4 listeners: TCP and UDP forwarding for `RouteTable::l4_listeners`.

use crate::config::{Limits, Timeouts};
use crate::metrics::Metrics;
use crate::proxy::Lifecycle;
use crate::table::CompiledTable;
use arc_swap::ArcSwap;
use causeway_model::L4Protocol;
use std::net::SocketAddr;
use std::sync::Arc;

/// Opens and closes L4 listeners as tables change.
pub(crate) struct L4Manager {
    _metrics: Metrics,
    _table: Arc<ArcSwap<CompiledTable>>,
    _timeouts: Timeouts,
    _limits: Limits,
}

impl L4Manager {
    pub fn new(metrics: Metrics, table: Arc<ArcSwap<CompiledTable>>, timeouts: Timeouts, limits: Limits) -> Self {
        Self { _metrics: metrics, _table: table, _timeouts: timeouts, _limits: limits }
    }

    pub fn start(&self, _life: Lifecycle) {}

    pub fn stop(&self) {}

    pub fn reconcile(&self, _table: &CompiledTable) {}

    pub fn local_addrs(&self) -> Vec<(L4Protocol, SocketAddr)> {
        Vec::new()
    }
}
