//! Drawing `sloguard top`: header, route table, the selected route's P99
//! against its SLO line, and the keys. Sized for 80×24; wider terminals give
//! the route column the extra room. Everything text from the agent passes
//! through `cell` (one line, bounded, no control characters).
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, TableState,
};

use super::model::Model;
use crate::cli::{cell, fmt_secs};
use crate::export::status::RouteStatus;

/// Height of the chart pane, borders included.
const CHART_ROWS: u16 = 7;

pub fn draw(f: &mut Frame, m: &Model) {
    let [header, table, chart, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(CHART_ROWS),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, m);
    draw_table(f, table, m);
    draw_chart(f, chart, m);
    let help = if m.editing {
        "type a service name  Enter done  Esc done  Backspace delete"
    } else {
        "q quit  p/b/e/r sort p99/burn/5xx/rate  i invert  / service  g gray  c clear  ↑↓"
    };
    f.render_widget(
        Paragraph::new(help).style(Style::default().add_modifier(Modifier::REVERSED)),
        keys,
    );
}

fn draw_header(f: &mut Frame, area: Rect, m: &Model) {
    let mut lines = Vec::new();
    match &m.doc {
        Some(d) => {
            let a = &d.agent;
            let health = if !a.healthy {
                Span::styled(
                    "UNHEALTHY",
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                )
            } else if !a.ready {
                Span::styled("not ready", Style::default().fg(Color::Yellow))
            } else {
                Span::raw("healthy")
            };
            lines.push(Line::from(vec![
                Span::styled(
                    cell(&d.node, 20),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("  {}  ", cell(&d.fuse_mode, 8))),
                health,
                Span::raw(format!(
                    "  {:.0} ev/s  lost {}  routes {}  {}",
                    a.events_per_second,
                    a.events_lost_total,
                    d.routes.len(),
                    cell(d.generated_at.get(11..19).unwrap_or(""), 8),
                )),
            ]));
        }
        None => lines.push(Line::raw("waiting for the agent…")),
    }
    let mut second = vec![Span::raw(format!(
        "sort {}{}  service {}{}  gray {}",
        m.sort.label(),
        if m.ascending { "↑" } else { "↓" },
        if m.service.is_empty() && !m.editing {
            "*".to_string()
        } else {
            cell(&m.service, 40)
        },
        if m.editing { "▏" } else { "" },
        m.gray.label(),
    ))];
    if let Some(e) = &m.error {
        second.push(Span::styled(
            format!("  STALE: {}", cell(e, 200)),
            Style::default().fg(Color::Red),
        ));
    }
    lines.push(Line::from(second));
    f.render_widget(Paragraph::new(lines), area);
}

/// FUSE column: `OPEN`, `half`, `-`; `*` marks an operator override.
fn fuse_cell(r: &RouteStatus) -> String {
    let s = match r.fuse.state.as_str() {
        "open" => "OPEN",
        "half_open" => "half",
        "closed" => "-",
        other => other,
    };
    let star = if r.fuse.overridden.is_some() { "*" } else { "" };
    cell(&format!("{s}{star}"), 6)
}

fn draw_table(f: &mut Frame, area: Rect, m: &Model) {
    let widths = [
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(5),
    ];
    let head = Row::new([
        "SERVICE", "METH", "ROUTE", "GRAY", "RPS", "5XX%", "P99", "BURN", "LVL", "FUSE",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let route_w = area
        .width
        .saturating_sub(8 + 4 + 6 + 6 + 5 + 6 + 5 + 4 + 5 + 9)
        .max(8) as usize;
    let rows: Vec<Row> = m
        .rows()
        .into_iter()
        .map(|r| {
            let style = if r.l2 || r.fuse.state == "open" {
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else if r.l1 || r.gray_rollback {
                Style::default().fg(Color::Yellow)
            } else {
                Style::default()
            };
            let over = r.p99_seconds.is_some_and(|p| p > r.target_p99_seconds);
            Row::new(vec![
                Cell::from(cell(&r.service, 8)),
                Cell::from(cell(&r.method, 4)),
                Cell::from(cell(&r.route, route_w)),
                Cell::from(cell(
                    if r.gray_tag.is_empty() {
                        "-"
                    } else {
                        &r.gray_tag
                    },
                    6,
                )),
                Cell::from(rate(r.rate_per_second)),
                Cell::from(format!("{:.1}", (r.error_ratio * 100.0).min(100.0))),
                Cell::from(fmt_secs(r.p99_seconds)).style(if over {
                    Style::default().add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                }),
                Cell::from(burn(r.worst_burn())),
                Cell::from(if r.level().is_empty() { "-" } else { r.level() }),
                Cell::from(fuse_cell(r)),
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(head)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(m.selected));
    f.render_stateful_widget(table, area, &mut state);
}

fn rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
    } else if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn burn(b: f64) -> String {
    if b >= 1000.0 {
        ">999".into()
    } else {
        format!("{b:.1}")
    }
}

fn draw_chart(f: &mut Frame, area: Rect, m: &Model) {
    let Some(r) = m.selected_row() else {
        f.render_widget(Block::default().borders(Borders::ALL).title(" P99 "), area);
        return;
    };
    let title = format!(
        " P99 {} {} vs SLO {} ",
        cell(&r.method, 7),
        cell(&r.route, 40),
        fmt_secs(Some(r.target_p99_seconds))
    );
    let points: Vec<(f64, f64)> = m
        .history(r)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (i as f64, p * 1000.0)))
        .collect();
    let n = m.history(r).map_or(0, |h| h.len()).max(2) as f64 - 1.0;
    let slo_ms = r.target_p99_seconds * 1000.0;
    let slo = [(0.0, slo_ms), (n, slo_ms)];
    let top = points.iter().map(|p| p.1).fold(slo_ms, f64::max) * 1.2;
    let data = vec![
        Dataset::default()
            .name("slo")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Red))
            .data(&slo),
        Dataset::default()
            .name("p99")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Cyan))
            .data(&points),
    ];
    let chart = Chart::new(data)
        .block(Block::default().borders(Borders::ALL).title(title))
        .x_axis(Axis::default().bounds([0.0, n]))
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels([Span::raw("0"), Span::raw(fmt_secs(Some(top / 1000.0)))]),
        )
        .hidden_legend_constraints((Constraint::Ratio(0, 1), Constraint::Ratio(0, 1)));
    f.render_widget(chart, area);
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::cli::top::model::{GrayFilter, SortKey};
    use crate::export::status::{AgentStatus, BurnRate, FuseBrief, StatusDoc};

    #[test]
    fn an_80x24_screen_shows_rows_levels_fuse_and_keys() {
        let mut r = RouteStatus {
            service: "e2e-shop".into(),
            method: "GET".into(),
            route: "/api/flaky/{id}".into(),
            gray_tag: String::new(),
            requests: 20,
            rate_per_second: 20.0,
            error_ratio: 0.5,
            p50_seconds: Some(0.3),
            p99_seconds: Some(0.31),
            target_p99_seconds: 0.25,
            target_error_ratio: 0.005,
            baseline_p99_seconds: Some(0.002),
            burn_rate: BurnRate {
                m5: 100.0,
                h1: 9.0,
                h6: 1.0,
            },
            l1: true,
            l2: true,
            gray_rollback: false,
            alerts: vec!["SloguardP99SpikeWith5xxBurst".into()],
            fuse: FuseBrief {
                state: "open".into(),
                overridden: None,
            },
        };
        let mut m = Model::new(SortKey::P99, String::new(), GrayFilter::All);
        for p in [0.002, 0.003, 0.31] {
            r.p99_seconds = Some(p);
            m.apply(StatusDoc {
                schema: crate::export::status::STATUS_SCHEMA.into(),
                node: "node-1".into(),
                version: "0".into(),
                generated_at: "2026-12-06T23:00:00Z".into(),
                period_seconds: 1.0,
                fuse_mode: "enforce".into(),
                agent: AgentStatus {
                    healthy: true,
                    ready: true,
                    ..Default::default()
                },
                routes: vec![r.clone()],
                other_fuses: vec![],
            });
        }
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, &m)).unwrap();
        let text: String = t
            .backend()
            .buffer()
            .content()
            .chunks(80)
            .map(|l| l.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        let row = text
            .lines()
            .find(|l| l.contains("/api/flaky/{id}"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            row.contains("L2") && row.contains("OPEN") && row.contains("310ms"),
            "{row}"
        );
        assert!(text.contains("vs SLO 250ms"), "{text}");
        assert!(
            text.lines().nth(23).unwrap().starts_with("q quit"),
            "{text}"
        );
    }
}
