//! The timeline of one run as a self-contained SVG (or an HTML page holding
//! it): replicas as lanes, virtual time left to right, markers for view
//! changes, crashes and restarts, partitions, faults, commits and the
//! violation.
//!
//! Owns layout and drawing only; reads `RunOutcome::timeline` and changes
//! nothing. No scripts, fonts or links: the file opens anywhere.

use std::collections::BTreeMap;
use std::fmt::Write;

use shoal_sim::{RunOutcome, TimelineEvent, TimelineKind, Verdict};

use crate::report::xml_escape;

const WIDTH_PX: f64 = 1200.0;
const MARGIN_LEFT_PX: f64 = 110.0;
const MARGIN_RIGHT_PX: f64 = 30.0;
const LANES_TOP_PX: f64 = 80.0;
const LANE_HEIGHT_PX: f64 = 56.0;
const AXIS_HEIGHT_PX: f64 = 40.0;
const LEGEND_HEIGHT_PX: f64 = 40.0;
/// Commit ticks beyond this per lane are thinned (every k-th is drawn), so a
/// long run still gives a file a browser opens quickly.
const COMMIT_MARKERS_PER_LANE_MAX: usize = 400;
/// Other markers beyond this per lane are dropped (the count is shown).
const MARKERS_PER_LANE_MAX: usize = 2_000;
const AXIS_TICKS_TARGET: u64 = 10;
const LIVENESS_LABEL_WIDTH_PX: f64 = 130.0;

const COLOR_VIEW_CHANGE: &str = "#1f6feb";
const COLOR_CRASH: &str = "#222222";
const COLOR_RESTART: &str = "#2da44e";
const COLOR_PARTITION: &str = "#f0883e";
const COLOR_FAULT: &str = "#d29922";
const COLOR_COMMIT: &str = "#57ab5a";
const COLOR_VIOLATION: &str = "#cf222e";

struct Layout {
    end_ns: u64,
    plot_width_px: f64,
}

impl Layout {
    fn x(&self, time_ns: u64) -> f64 {
        MARGIN_LEFT_PX + (time_ns.min(self.end_ns) as f64 / self.end_ns as f64) * self.plot_width_px
    }
}

fn lane_top(replica: u8) -> f64 {
    LANES_TOP_PX + f64::from(replica) * LANE_HEIGHT_PX
}

/// A round step (1, 2 or 5 × 10^k ns) giving about `AXIS_TICKS_TARGET` ticks.
fn tick_step_ns(end_ns: u64) -> u64 {
    let raw = (end_ns / AXIS_TICKS_TARGET).max(1);
    let mut magnitude = 1u64;
    while magnitude.saturating_mul(10) <= raw {
        magnitude *= 10;
    }
    [1, 2, 5, 10].into_iter().map(|k| k * magnitude).find(|step| *step >= raw).unwrap_or(10 * magnitude)
}

fn format_tick(ns: u64) -> String {
    if ns == 0 {
        "0".into()
    } else if ns >= 1_000_000_000 {
        format!("{} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{} ms", ns as f64 / 1e6)
    } else {
        format!("{} µs", ns as f64 / 1e3)
    }
}

fn tooltip(event: &TimelineEvent) -> String {
    format!(
        "<title>{} replica {} {:?}: {}</title>",
        crate::format_seconds(event.time_ns),
        event.replica,
        event.kind,
        xml_escape(&event.detail)
    )
}

/// Draw one point marker for `event` centred in its lane.
fn marker(svg: &mut String, layout: &Layout, event: &TimelineEvent) {
    let x = layout.x(event.time_ns);
    let y = lane_top(event.replica) + LANE_HEIGHT_PX / 2.0;
    let tip = tooltip(event);
    let _ = match event.kind {
        TimelineKind::ViewChange => writeln!(
            svg,
            r#"<g><polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{COLOR_VIEW_CHANGE}"/>{tip}</g>"#,
            y - 7.0,
            x + 7.0,
            y + 7.0,
            x - 7.0
        ),
        TimelineKind::Crash => writeln!(
            svg,
            r#"<g><polygon points="{:.1},{:.1} {:.1},{:.1} {x:.1},{:.1}" fill="{COLOR_CRASH}"/>{tip}</g>"#,
            x - 7.0,
            y - 8.0,
            x + 7.0,
            y - 8.0,
            y + 6.0
        ),
        TimelineKind::Restart => writeln!(
            svg,
            r#"<g><polygon points="{:.1},{:.1} {:.1},{:.1} {x:.1},{:.1}" fill="{COLOR_RESTART}"/>{tip}</g>"#,
            x - 7.0,
            y + 8.0,
            x + 7.0,
            y + 8.0,
            y - 6.0
        ),
        TimelineKind::PartitionStart | TimelineKind::PartitionEnd => writeln!(
            svg,
            r#"<g><rect x="{:.1}" y="{:.1}" width="3" height="20" fill="{COLOR_PARTITION}"/>{tip}</g>"#,
            x - 1.5,
            y - 10.0
        ),
        TimelineKind::Fault => {
            writeln!(svg, r#"<g><circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{COLOR_FAULT}"/>{tip}</g>"#, y - 14.0)
        }
        TimelineKind::Commit => writeln!(
            svg,
            r#"<g><rect x="{x:.1}" y="{:.1}" width="1.2" height="8" fill="{COLOR_COMMIT}"/>{tip}</g>"#,
            y + 12.0
        ),
        TimelineKind::Violation => writeln!(
            svg,
            r#"<g><circle cx="{x:.1}" cy="{y:.1}" r="9" fill="none" stroke="{COLOR_VIOLATION}" stroke-width="3"/>{tip}</g>"#
        ),
    };
}

/// Shaded spans between a start and an end marker on one lane (crash to
/// restart, partition start to end); a span still open at the end runs on.
fn spans(events: &[&TimelineEvent], start: TimelineKind, end: TimelineKind, end_ns: u64) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    let mut open: Option<u64> = None;
    for event in events {
        if event.kind == start && open.is_none() {
            open = Some(event.time_ns);
        } else if event.kind == end
            && let Some(from) = open.take()
        {
            spans.push((from, event.time_ns));
        }
    }
    if let Some(from) = open {
        spans.push((from, end_ns));
    }
    spans
}

pub fn render_svg(outcome: &RunOutcome) -> String {
    let config = &outcome.config;
    let replicas = config.replica_count.max(1);
    let last_event_ns = outcome.timeline.iter().map(|event| event.time_ns).max().unwrap_or(0);
    // A run ends when the cluster converges after the safety phase (or at a
    // violation), usually well before the liveness bound: draw what ran.
    let end_ns = config.safety_time_ns.max(outcome.virtual_time_ns).max(last_event_ns).max(1);
    let layout = Layout { end_ns, plot_width_px: WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX };
    let lanes_bottom = lane_top(replicas);
    let height = lanes_bottom + AXIS_HEIGHT_PX + LEGEND_HEIGHT_PX;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" viewBox="0 0 {WIDTH_PX} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let verdict = crate::sweep::verdict_line(&outcome.verdict);
    let verdict_color = if outcome.verdict == Verdict::Pass { COLOR_RESTART } else { COLOR_VIOLATION };
    let _ = writeln!(
        svg,
        r#"<text x="10" y="24" font-size="16" font-weight="bold">shoal-sim {} seed {}</text><text x="10" y="44" fill="{verdict_color}">{}</text>"#,
        xml_escape(&config.scenario),
        config.seed,
        xml_escape(&verdict)
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="62" fill="#555">ops committed {} · view changes {} · faults injected {} · virtual time {} (safety {}, liveness bound {}) · trace {:016x}</text>"##,
        outcome.ops_committed,
        outcome.view_changes,
        outcome.faults_injected_total,
        crate::format_seconds(outcome.virtual_time_ns),
        crate::format_seconds(config.safety_time_ns),
        crate::format_seconds(config.liveness_time_ns),
        outcome.trace_hash
    );

    // Lanes, then the liveness phase shading over them.
    for replica in 0..replicas {
        let top = lane_top(replica);
        let fill = if replica % 2 == 0 { "#f6f8fa" } else { "#eef1f4" };
        let _ = writeln!(
            svg,
            r#"<rect x="{MARGIN_LEFT_PX}" y="{top}" width="{:.1}" height="{LANE_HEIGHT_PX}" fill="{fill}"/><text x="10" y="{:.1}">replica {replica}</text>"#,
            layout.plot_width_px,
            top + LANE_HEIGHT_PX / 2.0 + 4.0
        );
    }
    let safety_end_x = layout.x(config.safety_time_ns);
    let _ = writeln!(
        svg,
        r##"<rect x="{safety_end_x:.1}" y="{LANES_TOP_PX}" width="{:.1}" height="{:.1}" fill="#2da44e" fill-opacity="0.06"/><line x1="{safety_end_x:.1}" y1="{:.1}" x2="{safety_end_x:.1}" y2="{lanes_bottom:.1}" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#555">safety (faults on)</text>{}"##,
        (layout.x(end_ns) - safety_end_x).max(0.0),
        lanes_bottom - LANES_TOP_PX,
        LANES_TOP_PX - 8.0,
        MARGIN_LEFT_PX + 4.0,
        LANES_TOP_PX - 4.0,
        // No room for the label when the run ended with the safety phase.
        if layout.x(end_ns) - safety_end_x > LIVENESS_LABEL_WIDTH_PX {
            format!(
                r##"<text x="{:.1}" y="{:.1}" fill="#555">liveness (faults off)</text>"##,
                safety_end_x + 4.0,
                LANES_TOP_PX - 4.0
            )
        } else {
            String::new()
        }
    );

    if let Verdict::Panic { .. } = outcome.verdict {
        // The panic unwound through the simulator, taking the run's events
        // with it: say so instead of drawing an empty run.
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="{COLOR_VIOLATION}">the run panicked: its timeline unwound with it (see the message above)</text>"##,
            MARGIN_LEFT_PX + 16.0,
            LANES_TOP_PX + LANE_HEIGHT_PX / 2.0 + 4.0
        );
    } else if outcome.virtual_time_ns < end_ns {
        // The run stopped early (at a safety violation): grey out the rest.
        let stop_x = layout.x(outcome.virtual_time_ns);
        let _ = writeln!(
            svg,
            r##"<rect x="{stop_x:.1}" y="{LANES_TOP_PX}" width="{:.1}" height="{:.1}" fill="#ffffff" fill-opacity="0.7"/><text x="{:.1}" y="{:.1}" fill="#555">run stopped at {}</text>"##,
            layout.x(end_ns) - stop_x,
            lanes_bottom - LANES_TOP_PX,
            stop_x + 16.0,
            LANES_TOP_PX + LANE_HEIGHT_PX / 2.0 + 4.0,
            crate::format_seconds(outcome.virtual_time_ns)
        );
    }

    let mut by_replica: BTreeMap<u8, Vec<&TimelineEvent>> = BTreeMap::new();
    for event in &outcome.timeline {
        by_replica.entry(event.replica.min(replicas - 1)).or_default().push(event);
    }
    for (replica, events) in &by_replica {
        let top = lane_top(*replica);
        for (from, to) in spans(events, TimelineKind::Crash, TimelineKind::Restart, end_ns) {
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#999" fill-opacity="0.35"><title>replica {replica} down {} .. {}</title></rect>"##,
                layout.x(from),
                top + 4.0,
                (layout.x(to) - layout.x(from)).max(1.0),
                LANE_HEIGHT_PX - 8.0,
                crate::format_seconds(from),
                crate::format_seconds(to)
            );
        }
        for (from, to) in spans(events, TimelineKind::PartitionStart, TimelineKind::PartitionEnd, end_ns) {
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="10" fill="{COLOR_PARTITION}" fill-opacity="0.45"><title>replica {replica} partitioned {} .. {}</title></rect>"#,
                layout.x(from),
                top + 2.0,
                (layout.x(to) - layout.x(from)).max(1.0),
                crate::format_seconds(from),
                crate::format_seconds(to)
            );
        }
        let commits = events.iter().filter(|event| event.kind == TimelineKind::Commit).count();
        let commit_stride = commits.div_ceil(COMMIT_MARKERS_PER_LANE_MAX).max(1);
        let mut drawn = 0;
        let mut dropped = 0;
        for (index, event) in events.iter().filter(|event| event.kind == TimelineKind::Commit).enumerate() {
            if index % commit_stride == 0 {
                marker(&mut svg, &layout, event);
            }
        }
        for event in events.iter().filter(|event| event.kind != TimelineKind::Commit) {
            if drawn < MARKERS_PER_LANE_MAX {
                marker(&mut svg, &layout, event);
                drawn += 1;
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#555" text-anchor="end">+{dropped} markers not drawn</text>"##,
                WIDTH_PX - MARGIN_RIGHT_PX,
                top + 12.0
            );
        }
    }
    for event in outcome.timeline.iter().filter(|event| event.kind == TimelineKind::Violation) {
        let x = layout.x(event.time_ns);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{LANES_TOP_PX}" x2="{x:.1}" y2="{lanes_bottom:.1}" stroke="{COLOR_VIOLATION}" stroke-width="2"><title>violation: {}</title></line>"#,
            xml_escape(&event.detail)
        );
    }

    // Time axis.
    let axis_y = lanes_bottom + 4.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{MARGIN_LEFT_PX}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#333"/>"##,
        layout.x(end_ns)
    );
    let step = tick_step_ns(end_ns);
    let mut tick_ns = 0;
    while tick_ns <= end_ns {
        let x = layout.x(tick_ns);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            axis_y + 5.0,
            axis_y + 18.0,
            format_tick(tick_ns)
        );
        tick_ns += step;
    }

    // Legend.
    let legend_y = lanes_bottom + AXIS_HEIGHT_PX + 16.0;
    let legend = [
        ("view change", COLOR_VIEW_CHANGE),
        ("crash", COLOR_CRASH),
        ("restart", COLOR_RESTART),
        ("partition", COLOR_PARTITION),
        ("fault", COLOR_FAULT),
        ("commit", COLOR_COMMIT),
        ("violation", COLOR_VIOLATION),
    ];
    for (index, (label, color)) in legend.iter().enumerate() {
        let x = MARGIN_LEFT_PX + index as f64 * 130.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{legend_y:.1}">{label}</text>"#,
            legend_y - 10.0,
            x + 18.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The SVG inside a minimal HTML page, with the replay command under it.
pub fn render_html(outcome: &RunOutcome) -> String {
    let title = format!("shoal-sim {} seed {}", outcome.config.scenario, outcome.config.seed);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"font-family:sans-serif\">\n{}<p>Replay: <code>{}</code></p>\n</body>\n</html>\n",
        xml_escape(&title),
        render_svg(outcome),
        xml_escape(&crate::replay_command(outcome.config.seed, &outcome.config.scenario))
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{catalog, fake};

    /// Checks that every tag is closed in order: enough to catch the mistakes
    /// string-built XML makes (no XML parser among the dependencies).
    pub(crate) fn assert_well_formed(xml: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            assert!(!tag.contains('<'), "`<` inside a tag: {tag}");
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    }

    #[test]
    fn timeline_of_a_failing_run_draws_every_kind_and_is_well_formed() {
        let outcome = fake::run(&catalog::partition_storm(1));
        let svg = render_svg(&outcome);
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches(">replica ").count(), 3, "one lane per replica");
        assert!(svg.contains(COLOR_VIEW_CHANGE) && svg.contains(COLOR_FAULT) && svg.contains(COLOR_PARTITION));
        assert!(svg.contains("violation: op 7 committed with two checksums"));
        assert!(svg.contains("SAFETY Agreement"));
        assert!(svg.contains("run stopped at 1.000 s"));
    }

    #[test]
    fn a_panicked_run_says_its_timeline_is_gone() {
        let outcome = crate::runner::run_caught(&fake::run, &catalog::steady(13));
        let svg = render_svg(&outcome);
        assert_well_formed(&svg);
        assert!(svg.contains("the run panicked") && !svg.contains("run stopped"), "{svg}");
        assert!(!svg.contains("liveness (faults off)"), "no room for the liveness label");
    }

    #[test]
    fn crash_and_restart_become_a_down_span() {
        let outcome = fake::run(&catalog::crash_loop(2));
        let svg = render_svg(&outcome);
        assert_well_formed(&svg);
        assert_eq!(svg.matches(" down ").count(), 1, "{svg}");
    }

    #[test]
    fn html_wraps_the_svg_and_escapes_text() {
        let mut outcome = fake::run(&catalog::steady(0));
        outcome.timeline.push(TimelineEvent {
            time_ns: 5,
            replica: 1,
            kind: TimelineKind::Fault,
            detail: "<script>&".into(),
        });
        let html = render_html(&outcome);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;&amp;"));
        assert_well_formed(
            html.trim_start_matches("<!DOCTYPE html>\n").replace("<meta charset=\"utf-8\">", "").as_str(),
        );
    }

    #[test]
    fn axis_ticks_are_round_numbers() {
        assert_eq!(tick_step_ns(4_000_000_000), 500_000_000);
        assert_eq!(tick_step_ns(1_000_000_000), 100_000_000);
        assert_eq!(tick_step_ns(7), 1);
        assert_eq!(format_tick(2_000_000_000), "2 s");
        assert_eq!(format_tick(500_000_000), "500 ms");
        assert_eq!(format_tick(1_500_000_000), "1.5 s");
    }
}
