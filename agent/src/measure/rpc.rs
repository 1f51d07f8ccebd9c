//! RPC metrics for gRPC calls (OpenTelemetry RPC semantic conventions):
//! `rpc_server_call_duration_seconds` and `rpc_client_call_duration_seconds`
//! by service, `rpc_system`, `rpc_service`, `rpc_method`,
//! `rpc_grpc_status_code` and gray tag. The method and service come from
//! the call's route (`/package.Service/Method`, after the route table's cap),
//! so their cardinality is the route table's.
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::red::DURATION_BUCKETS;
use crate::export::metrics::Escaped;
use crate::protocol::http2::grpc::split_path;
use crate::request::Side;
use crate::request::route::RouteKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service_name: Escaped<Arc<str>>,
    pub rpc_system: &'static str,
    pub rpc_service: Escaped<Arc<str>>,
    pub rpc_method: Escaped<Arc<str>>,
    /// The numeric gRPC status code (0..=16), as OTel's `rpc.grpc.status_code`.
    pub rpc_grpc_status_code: u8,
    pub gray_tag: Escaped<Arc<str>>,
}

type CallFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

fn new_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[derive(Clone)]
pub struct RpcMetrics {
    server: CallFamily,
    client: CallFamily,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self {
            server: Family::new_with_constructor(new_histogram as fn() -> _),
            client: Family::new_with_constructor(new_histogram as fn() -> _),
        }
    }
}

impl RpcMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "rpc_server_call_duration",
            "Duration of gRPC calls a local process served (first request byte read to last response byte written)",
            Unit::Seconds,
            self.server.clone(),
        );
        registry.register_with_unit(
            "rpc_client_call_duration",
            "Duration of gRPC calls a local process made (first request byte written to last response byte read)",
            Unit::Seconds,
            self.client.clone(),
        );
    }

    /// Count one completed gRPC call with its status code.
    pub fn observe(
        &self,
        side: Side,
        route: &RouteKey,
        code: u8,
        gray_tag: &Arc<str>,
        seconds: f64,
    ) {
        let (svc, method): (Arc<str>, Arc<str>) = match split_path(&route.route) {
            Some((s, m)) => (s.into(), m.into()),
            // A route the table capped (`/{overflow}`) or of another shape.
            None => ("".into(), route.route.clone()),
        };
        let labels = RpcLabels {
            service_name: Escaped(route.service.clone()),
            rpc_system: "grpc",
            rpc_service: Escaped(svc),
            rpc_method: Escaped(method),
            rpc_grpc_status_code: code,
            gray_tag: Escaped(gray_tag.clone()),
        };
        let fam = match side {
            Side::Server => &self.server,
            Side::Client => &self.client,
        };
        fam.get_or_create(&labels).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_are_counted_by_service_method_and_status() {
        let mut reg = Registry::default();
        let rpc = RpcMetrics::default();
        rpc.register(&mut reg);
        let route = RouteKey::new("greeter", "POST", "/demo.Greeter/Hello");
        let gray: Arc<str> = "".into();
        rpc.observe(Side::Server, &route, 0, &gray, 0.002);
        rpc.observe(Side::Server, &route, 14, &gray, 0.2);
        rpc.observe(Side::Client, &route, 14, &gray, 0.2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for want in [
            "rpc_server_call_duration_seconds_count{service_name=\"greeter\",rpc_system=\"grpc\",rpc_service=\"demo.Greeter\",rpc_method=\"Hello\",rpc_grpc_status_code=\"0\",gray_tag=\"\"} 1",
            "rpc_server_call_duration_seconds_count{service_name=\"greeter\",rpc_system=\"grpc\",rpc_service=\"demo.Greeter\",rpc_method=\"Hello\",rpc_grpc_status_code=\"14\",gray_tag=\"\"} 1",
            "rpc_client_call_duration_seconds_count{service_name=\"greeter\",rpc_system=\"grpc\",rpc_service=\"demo.Greeter\",rpc_method=\"Hello\",rpc_grpc_status_code=\"14\",gray_tag=\"\"} 1",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }
}
