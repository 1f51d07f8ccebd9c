//! `sloguard_alerts_*` counters. Cheap to clone (shared).
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::export::metrics::Escaped;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RaisedLabels {
    alertname: Escaped<String>,
    status: Escaped<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    receiver: Escaped<String>,
    result: Escaped<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: Escaped<String>,
}

/// The result of delivering one alert to one receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    Success,
    /// Every attempt failed (or a non-retryable answer).
    Failure,
    /// Not attempted: the receiver's queue was full.
    Dropped,
}

impl DeliveryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Success => "success",
            DeliveryResult::Failure => "failure",
            DeliveryResult::Dropped => "dropped",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct AlertMetrics {
    raised: Family<RaisedLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    retries: Family<ReceiverLabels, Counter>,
    queue_dropped: Counter,
}

impl AlertMetrics {
    pub fn register(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters.
        registry.register(
            "sloguard_alerts",
            "Alerts raised by the detectors, by alert name and status",
            self.raised.clone(),
        );
        registry.register(
            "sloguard_alerts_deliveries",
            "Alert deliveries per receiver and result (success, failure, dropped)",
            self.deliveries.clone(),
        );
        registry.register(
            "sloguard_alerts_delivery_retries",
            "Retried alert delivery attempts per receiver",
            self.retries.clone(),
        );
        registry.register(
            "sloguard_alerts_queue_dropped",
            "Alerts dropped because the delivery queue was full",
            self.queue_dropped.clone(),
        );
    }

    /// Makes a receiver's series exist (at 0) before its first delivery.
    pub(crate) fn init_receiver(&self, receiver: &str) {
        for r in [
            DeliveryResult::Success,
            DeliveryResult::Failure,
            DeliveryResult::Dropped,
        ] {
            let _ = self.deliveries.get_or_create(&DeliveryLabels {
                receiver: receiver.into(),
                result: r.as_str().into(),
            });
        }
        let _ = self.retries.get_or_create(&ReceiverLabels {
            receiver: receiver.into(),
        });
    }

    pub(crate) fn raise(&self, alertname: &str, status: &str) {
        self.raised
            .get_or_create(&RaisedLabels {
                alertname: alertname.into(),
                status: status.into(),
            })
            .inc();
    }

    pub(crate) fn delivered(&self, receiver: &str, result: DeliveryResult, n: u64) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                receiver: receiver.into(),
                result: result.as_str().into(),
            })
            .inc_by(n);
    }

    pub(crate) fn retried(&self, receiver: &str) {
        self.retries
            .get_or_create(&ReceiverLabels {
                receiver: receiver.into(),
            })
            .inc();
    }

    pub(crate) fn queue_dropped(&self) {
        self.queue_dropped.inc();
    }

    pub fn raised_count(&self, alertname: &str, status: &str) -> u64 {
        self.raised
            .get_or_create(&RaisedLabels {
                alertname: alertname.into(),
                status: status.into(),
            })
            .get()
    }

    pub fn delivery_count(&self, receiver: &str, result: DeliveryResult) -> u64 {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                receiver: receiver.into(),
                result: result.as_str().into(),
            })
            .get()
    }

    pub fn retry_count(&self, receiver: &str) -> u64 {
        self.retries
            .get_or_create(&ReceiverLabels {
                receiver: receiver.into(),
            })
            .get()
    }

    pub fn queue_dropped_count(&self) -> u64 {
        self.queue_dropped.get()
    }
}
