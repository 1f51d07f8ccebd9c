//! The probes' side of the tracing scope: the `SCOPE` map of task groups and
//! the `scope_active` switch in `CONFIG` (kernel side: agent-ebpf/src/scope.rs;
//! who is in scope: crate::kernel::scope).
use agent_common::ProbeConfig;
use aya::maps::{Array, HashMap, MapData};

use super::{ProbeError, Probes, classify_load};

/// The kernel's set of in-scope task group ids (presence is the answer).
pub type ScopeMap = HashMap<MapData, u32, u8>;

impl Probes {
    /// The `SCOPE` map, for the one thread that keeps it current; can be
    /// taken once.
    pub fn take_scope_map(&mut self) -> Result<ScopeMap, ProbeError> {
        let map = self
            .ebpf
            .take_map("SCOPE")
            .ok_or(ProbeError::Map("SCOPE"))?;
        HashMap::try_from(map).map_err(|_| ProbeError::Map("SCOPE"))
    }

    /// Turn the scope check on (only task groups in `SCOPE` are traced) or
    /// off (everything is). Fill the map before turning it on.
    pub fn set_scope_active(&mut self, on: bool) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .map_mut("CONFIG")
            .ok_or(ProbeError::Map("CONFIG"))?;
        let mut arr: Array<_, ProbeConfig> =
            Array::try_from(map).map_err(|_| ProbeError::Map("CONFIG"))?;
        let mut cfg = arr
            .get(&0, 0)
            .map_err(|e| classify_load("reading the probes' CONFIG map", e))?;
        cfg.scope_active = on as u32;
        arr.set(0, cfg, 0)
            .map_err(|e| classify_load("writing the probes' CONFIG map", e))
    }
}
