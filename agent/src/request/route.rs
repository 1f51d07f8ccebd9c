//! Route identity: `route_key = (service_name, http_request_method, http_route)`.
use std::sync::Arc;

/// The unit the SLO engine judges and the fuse acts on. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub service: Arc<str>,
    pub method: Arc<str>,
    /// Route template (`/users/{id}`), never a raw path with ids or a query.
    pub route: Arc<str>,
}

impl RouteKey {
    pub fn new(service: &str, method: &str, route: &str) -> Self {
        Self {
            service: service.into(),
            method: method.into(),
            route: route.into(),
        }
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.service, self.method, self.route)
    }
}

pub mod gray;
mod table;
mod template;

pub use table::{
    NO_PATH_ROUTE, OTHER_GRAY_TAG, OVERFLOW_ROUTE, RouteCounters, RoutePattern, RouteTable,
    RoutesConfig, UNADMITTED_ROUTE, is_bucket_route, normalize_method,
};
