//! What `sloguard top` shows, apart from drawing: the last document, the
//! P99 history per row (the endpoint has only the last period; top keeps
//! the rest), sort order, filters and the selected row. Keys map to
//! changes here, so the behaviour is unit-tested without a terminal.
use std::collections::{HashMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::export::status::{RouteStatus, StatusDoc};

/// P99 samples kept per row: one per refresh, enough for an 80-column chart.
pub const HISTORY: usize = 60;
/// Rows whose history is kept although they left the document (a route
/// that comes back keeps its line); beyond this the oldest are forgotten.
const MAX_TRACKED: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    P99,
    Burn,
    Errors,
    Rate,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::P99 => "p99",
            SortKey::Burn => "burn",
            SortKey::Errors => "5xx",
            SortKey::Rate => "rate",
        }
    }

    fn value(self, r: &RouteStatus) -> f64 {
        match self {
            SortKey::P99 => r.p99_seconds.unwrap_or(0.0),
            SortKey::Burn => r.worst_burn(),
            SortKey::Errors => r.error_ratio,
            SortKey::Rate => r.rate_per_second,
        }
    }
}

/// Which gray tags are shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrayFilter {
    All,
    /// Untagged (stable) traffic only.
    Stable,
    Tag(String),
}

impl GrayFilter {
    fn keeps(&self, r: &RouteStatus) -> bool {
        match self {
            GrayFilter::All => true,
            GrayFilter::Stable => r.gray_tag.is_empty(),
            GrayFilter::Tag(t) => r.gray_tag == *t,
        }
    }

    pub fn label(&self) -> String {
        match self {
            GrayFilter::All => "all".into(),
            GrayFilter::Stable => "stable".into(),
            GrayFilter::Tag(t) => super::super::cell(t, 16),
        }
    }
}

/// A row's identity across refreshes.
pub type RowKey = (String, String, String, String);

pub fn row_key(r: &RouteStatus) -> RowKey {
    (
        r.service.clone(),
        r.method.clone(),
        r.route.clone(),
        r.gray_tag.clone(),
    )
}

/// What a key press did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Quit,
    Changed,
    Nothing,
}

pub struct Model {
    pub doc: Option<StatusDoc>,
    /// The last fetch's error (the table keeps the last good document).
    pub error: Option<String>,
    pub sort: SortKey,
    /// Ascending instead of the default highest first.
    pub ascending: bool,
    /// Substring of the service name; empty: all.
    pub service: String,
    /// True while typing the service filter after `/`.
    pub editing: bool,
    pub gray: GrayFilter,
    pub selected: usize,
    history: HashMap<RowKey, VecDeque<Option<f64>>>,
    /// Refresh number, to forget the least recently seen rows.
    seen: HashMap<RowKey, u64>,
    refreshes: u64,
}

impl Model {
    pub fn new(sort: SortKey, service: String, gray: GrayFilter) -> Self {
        Self {
            doc: None,
            error: None,
            sort,
            ascending: false,
            service,
            editing: false,
            gray,
            selected: 0,
            history: HashMap::new(),
            seen: HashMap::new(),
            refreshes: 0,
        }
    }

    /// A new document: one P99 sample per row (rows without traffic get a
    /// gap, not a zero that would look like a fast route).
    pub fn apply(&mut self, doc: StatusDoc) {
        self.refreshes += 1;
        for r in &doc.routes {
            let k = row_key(r);
            let h = self.history.entry(k.clone()).or_default();
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(if r.requests > 0 { r.p99_seconds } else { None });
            self.seen.insert(k, self.refreshes);
        }
        if self.history.len() > MAX_TRACKED {
            let mut by_age: Vec<(u64, RowKey)> =
                self.seen.iter().map(|(k, n)| (*n, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(self.history.len() - MAX_TRACKED) {
                self.history.remove(&k);
                self.seen.remove(&k);
            }
        }
        self.doc = Some(doc);
        self.error = None;
        self.clamp();
    }

    pub fn fetch_failed(&mut self, e: String) {
        self.error = Some(e);
    }

    /// The rows shown: filtered, then sorted (ties by name, so rows do not
    /// jump between refreshes).
    pub fn rows(&self) -> Vec<&RouteStatus> {
        let Some(doc) = &self.doc else {
            return Vec::new();
        };
        let mut v: Vec<&RouteStatus> = doc
            .routes
            .iter()
            .filter(|r| self.service.is_empty() || r.service.contains(&self.service))
            .filter(|r| self.gray.keeps(r))
            .collect();
        v.sort_by(|a, b| {
            let (x, y) = (self.sort.value(a), self.sort.value(b));
            let by = if self.ascending {
                x.total_cmp(&y)
            } else {
                y.total_cmp(&x)
            };
            by.then_with(|| row_key(a).cmp(&row_key(b)))
        });
        v
    }

    pub fn selected_row(&self) -> Option<&RouteStatus> {
        self.rows().get(self.selected).copied()
    }

    pub fn history(&self, r: &RouteStatus) -> Option<&VecDeque<Option<f64>>> {
        self.history.get(&row_key(r))
    }

    fn clamp(&mut self) {
        let n = self.rows().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    /// Gray tags present in the document, sorted.
    fn tags(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .doc
            .iter()
            .flat_map(|d| d.routes.iter())
            .filter(|r| !r.gray_tag.is_empty())
            .map(|r| r.gray_tag.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// `g`: all → stable → each tag → all.
    fn next_gray(&mut self) {
        let tags = self.tags();
        self.gray = match &self.gray {
            GrayFilter::All => GrayFilter::Stable,
            GrayFilter::Stable => tags
                .first()
                .map_or(GrayFilter::All, |t| GrayFilter::Tag(t.clone())),
            GrayFilter::Tag(cur) => match tags.iter().position(|t| t == cur) {
                Some(i) if i + 1 < tags.len() => GrayFilter::Tag(tags[i + 1].clone()),
                _ => GrayFilter::All,
            },
        };
    }

    pub fn key(&mut self, k: KeyEvent) -> Outcome {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Outcome::Quit;
        }
        if self.editing {
            match k.code {
                KeyCode::Enter | KeyCode::Esc => self.editing = false,
                KeyCode::Backspace => {
                    self.service.pop();
                }
                // Service names are short; the bound keeps the line intact.
                KeyCode::Char(c) if !c.is_control() && self.service.chars().count() < 40 => {
                    self.service.push(c)
                }
                _ => return Outcome::Nothing,
            }
            self.clamp();
            return Outcome::Changed;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Outcome::Quit,
            KeyCode::Char('p') => self.sort = SortKey::P99,
            KeyCode::Char('b') => self.sort = SortKey::Burn,
            KeyCode::Char('e') => self.sort = SortKey::Errors,
            KeyCode::Char('r') => self.sort = SortKey::Rate,
            KeyCode::Char('i') => self.ascending = !self.ascending,
            KeyCode::Char('/') => {
                self.editing = true;
                self.service.clear();
            }
            KeyCode::Char('g') => self.next_gray(),
            KeyCode::Char('c') => {
                self.service.clear();
                self.gray = GrayFilter::All;
            }
            KeyCode::Down | KeyCode::Char('j') => self.selected += 1,
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            _ => return Outcome::Nothing,
        }
        self.clamp();
        Outcome::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::status::{AgentStatus, BurnRate, FuseBrief};

    fn route(service: &str, route: &str, tag: &str, p99: f64, err: f64, rps: f64) -> RouteStatus {
        RouteStatus {
            service: service.into(),
            method: "GET".into(),
            route: route.into(),
            gray_tag: tag.into(),
            requests: 10,
            rate_per_second: rps,
            error_ratio: err,
            p50_seconds: None,
            p99_seconds: Some(p99),
            target_p99_seconds: 0.8,
            target_error_ratio: 0.005,
            baseline_p99_seconds: None,
            burn_rate: BurnRate {
                m5: err / 0.005,
                h1: 0.0,
                h6: 0.0,
            },
            l1: false,
            l2: false,
            gray_rollback: false,
            alerts: vec![],
            fuse: FuseBrief::default(),
        }
    }

    fn doc(routes: Vec<RouteStatus>) -> StatusDoc {
        StatusDoc {
            schema: crate::export::status::STATUS_SCHEMA.into(),
            node: "n".into(),
            version: "0".into(),
            generated_at: String::new(),
            period_seconds: 1.0,
            fuse_mode: "enforce".into(),
            agent: AgentStatus::default(),
            routes,
            other_fuses: vec![],
        }
    }

    fn press(m: &mut Model, c: KeyCode) -> Outcome {
        m.key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn names(m: &Model) -> Vec<String> {
        m.rows()
            .iter()
            .map(|r| format!("{}{}{}", r.service, r.route, r.gray_tag))
            .collect()
    }

    #[test]
    fn sorts_by_each_key_and_inverts() {
        let mut m = Model::new(SortKey::P99, String::new(), GrayFilter::All);
        m.apply(doc(vec![
            route("a", "/slow", "", 2.0, 0.0, 1.0),
            route("a", "/err", "", 0.1, 0.5, 2.0),
            route("b", "/busy", "", 0.2, 0.01, 90.0),
        ]));
        assert_eq!(names(&m), ["a/slow", "b/busy", "a/err"]);
        press(&mut m, KeyCode::Char('e'));
        assert_eq!(names(&m), ["a/err", "b/busy", "a/slow"]);
        press(&mut m, KeyCode::Char('b'));
        assert_eq!(names(&m)[0], "a/err");
        press(&mut m, KeyCode::Char('r'));
        assert_eq!(names(&m), ["b/busy", "a/err", "a/slow"]);
        press(&mut m, KeyCode::Char('i'));
        assert_eq!(names(&m), ["a/slow", "a/err", "b/busy"]);
        assert_eq!(press(&mut m, KeyCode::Char('q')), Outcome::Quit);
    }

    #[test]
    fn filters_by_service_and_cycles_gray_tags() {
        let mut m = Model::new(SortKey::P99, String::new(), GrayFilter::All);
        m.apply(doc(vec![
            route("shop", "/a", "", 1.0, 0.0, 1.0),
            route("shop", "/a", "canary", 0.9, 0.0, 1.0),
            route("auth", "/b", "", 0.5, 0.0, 1.0),
        ]));
        press(&mut m, KeyCode::Char('/'));
        for c in "sho".chars() {
            press(&mut m, KeyCode::Char(c));
        }
        // While typing, `q` is a letter, not quit.
        assert_eq!(press(&mut m, KeyCode::Char('q')), Outcome::Changed);
        press(&mut m, KeyCode::Backspace);
        press(&mut m, KeyCode::Enter);
        assert_eq!(names(&m), ["shop/a", "shop/acanary"]);
        press(&mut m, KeyCode::Char('g'));
        assert_eq!(m.gray, GrayFilter::Stable);
        assert_eq!(names(&m), ["shop/a"]);
        press(&mut m, KeyCode::Char('g'));
        assert_eq!(names(&m), ["shop/acanary"]);
        press(&mut m, KeyCode::Char('g'));
        assert_eq!(m.gray, GrayFilter::All);
        press(&mut m, KeyCode::Char('c'));
        assert_eq!(m.rows().len(), 3);
    }

    #[test]
    fn history_keeps_one_sample_per_refresh_bounded() {
        let mut m = Model::new(SortKey::P99, String::new(), GrayFilter::All);
        for i in 0..(HISTORY + 5) {
            let mut r = route("s", "/x", "", i as f64, 0.0, 1.0);
            if i == 3 {
                r.requests = 0;
            }
            m.apply(doc(vec![r]));
        }
        let r = m.selected_row().unwrap().clone();
        let h = m.history(&r).unwrap();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.back(), Some(&Some((HISTORY + 4) as f64)));
        // A period without requests is a gap.
        let mut m2 = Model::new(SortKey::P99, String::new(), GrayFilter::All);
        let mut r = route("s", "/x", "", 1.0, 0.0, 1.0);
        r.requests = 0;
        m2.apply(doc(vec![r.clone()]));
        assert_eq!(m2.history(&r).unwrap().back(), Some(&None));
    }
}
