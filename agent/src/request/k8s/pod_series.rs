//! Which metric series belong to which pod, so that a pod's series (and the
//! memory behind them) go when the pod is deleted. prometheus-client's
//! families cannot be iterated: each component notes the label sets it
//! creates for a pod and removes them by this index.
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use super::identity::K8sLabels;
use super::pods::PodSnapshot;

/// A pod by namespace and name, as its metric labels name it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl PodRef {
    pub fn of(labels: &K8sLabels) -> Self {
        Self {
            namespace: labels.k8s_namespace.clone(),
            name: labels.k8s_pod.clone(),
        }
    }
}

/// The pods of a snapshot (names by namespace), to test label sets against.
pub struct LivePods(HashMap<String, HashSet<String>>);

impl LivePods {
    pub fn of(snapshot: &PodSnapshot) -> Self {
        let mut m: HashMap<String, HashSet<String>> = HashMap::new();
        for p in snapshot.pods() {
            m.entry(p.namespace.clone())
                .or_default()
                .insert(p.name.clone());
        }
        Self(m)
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.0.get(namespace).is_some_and(|n| n.contains(name))
    }

    pub fn holds(&self, pod: &K8sLabels) -> bool {
        self.contains(&pod.k8s_namespace, &pod.k8s_pod)
    }
}

/// Label sets by the pod they carry.
#[derive(Clone, Debug)]
pub struct PodSeries<L> {
    by_pod: HashMap<PodRef, HashSet<L>>,
    /// A pod was noted since the last sweep (maybe one already gone: a late
    /// request on a connection of a deleted pod).
    noted_new_pod: bool,
}

impl<L> Default for PodSeries<L> {
    fn default() -> Self {
        Self {
            by_pod: HashMap::new(),
            noted_new_pod: false,
        }
    }
}

impl<L: Hash + Eq + Clone> PodSeries<L> {
    /// Remember that `labels` (a series of `pod`) exists.
    pub fn note(&mut self, pod: &K8sLabels, labels: &L) {
        let key = PodRef::of(pod);
        match self.by_pod.get_mut(&key) {
            Some(set) => {
                if !set.contains(labels) {
                    set.insert(labels.clone());
                }
            }
            None => {
                self.noted_new_pod = true;
                self.by_pod.insert(key, HashSet::from([labels.clone()]));
            }
        }
    }

    /// True when a pod was noted since the last [`Self::take_gone`].
    pub fn has_new_pods(&self) -> bool {
        self.noted_new_pod
    }

    /// Forget the pods `live` does not hold; their label sets, to remove.
    pub fn take_gone(&mut self, live: &LivePods) -> Vec<L> {
        self.noted_new_pod = false;
        let gone: Vec<PodRef> = self
            .by_pod
            .keys()
            .filter(|p| !live.contains(&p.namespace, &p.name))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for p in gone {
            if let Some(set) = self.by_pod.remove(&p) {
                out.extend(set);
            }
        }
        out
    }

    /// Pods with series.
    pub fn pods(&self) -> usize {
        self.by_pod.len()
    }
}
