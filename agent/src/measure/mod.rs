//! Stage 5, measurement: RED metrics per route (`red`), gRPC call metrics
//! (`rpc`) and the request-level
//! SLO engine (`slo`: periods, sketches, baselines, burn rates and the L1, L2
//! and gray-rollback detectors).
pub mod red;
pub mod rpc;
pub mod slo;
