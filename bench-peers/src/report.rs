//! The table: text for the terminal, JSON and an SVG bar plot for files.
//!
//! Pure functions of a `Report`, so rendering is tested without servers.
//! A system that did not run keeps its row, with the reason instead of
//! numbers; ratios against shoal stay empty until a shoal row is measured.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu;
use crate::workload::{Mode, PhaseResult, Workload};

const BYTES_PER_MB: f64 = 1_000_000.0;

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub started_unix_s: u64,
    pub duration_s: f64,
    pub settings: Settings,
    pub systems: Vec<SystemRun>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores_count: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub data_dir: String,
    pub data_dir_filesystem: String,
    /// 1-minute load average before and after the run: the machine is shared,
    /// and other work on its cores shows up in every column.
    pub load_average_1min_start: f64,
    pub load_average_1min_end: f64,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub message_size_bytes: usize,
    pub warmup_count: u64,
    pub sequential_count_max: u64,
    pub sequential_duration_max_s: f64,
    pub pipelined_count_max: u64,
    pub pipelined_duration_max_s: f64,
    pub in_flight_max: usize,
    pub read_batch_count: usize,
    pub read_duration_max_s: f64,
}

impl Settings {
    pub fn of(workload: &Workload) -> Settings {
        Settings {
            message_size_bytes: workload.message_size_bytes,
            warmup_count: workload.warmup_count,
            sequential_count_max: workload.sequential_count_max,
            sequential_duration_max_s: workload.sequential_duration_max.as_secs_f64(),
            pipelined_count_max: workload.pipelined_count_max,
            pipelined_duration_max_s: workload.pipelined_duration_max.as_secs_f64(),
            in_flight_max: workload.in_flight_max,
            read_batch_count: workload.read_batch_count,
            read_duration_max_s: workload.read_duration_max.as_secs_f64(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Measured,
    // No system reports it today (shoal runs); kept so a future driver that
    // cannot run yet still gets a row that says so.
    #[allow(dead_code)]
    NotRunnableYet,
    Skipped,
    Failed,
}

#[derive(Debug, Serialize)]
pub struct SystemRun {
    pub system: String,
    pub durability: String,
    /// The row the ratio columns divide by (shoal's own rows).
    pub is_reference: bool,
    pub version: Option<String>,
    pub status: Status,
    pub reason: Option<String>,
    /// Wall time of install check, start, workload and stop.
    pub duration_s: f64,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub mode: Mode,
    pub mode_label: String,
    pub messages_count: u64,
    pub elapsed_s: f64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    /// Per message for appends, per batch for reads (see `mode_label`).
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub server_cpu_s_per_million_messages: Option<f64>,
    /// shoal's msg/s divided by this row's (same mode); empty until shoal runs.
    pub shoal_msg_per_s_ratio: Option<f64>,
}

impl Row {
    pub fn of(phase: &PhaseResult, workload: &Workload, clock_ticks_per_s: u64) -> Row {
        let elapsed_s = phase.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        Row {
            mode: phase.mode,
            mode_label: phase.mode.describe(workload),
            messages_count: phase.messages_count,
            elapsed_s,
            msg_per_s: phase.messages_count as f64 / elapsed_s,
            mb_per_s: phase.payload_bytes as f64 / BYTES_PER_MB / elapsed_s,
            latency_p50_us: phase.latency_us.value_at_quantile(0.5),
            latency_p99_us: phase.latency_us.value_at_quantile(0.99),
            latency_p999_us: phase.latency_us.value_at_quantile(0.999),
            server_cpu_s_per_million_messages: cpu::cpu_s_per_million_messages(
                phase.server_cpu_ticks,
                clock_ticks_per_s,
                phase.messages_count,
            ),
            shoal_msg_per_s_ratio: None,
        }
    }
}

/// Fill `shoal_msg_per_s_ratio` of every non-reference row from the first
/// measured reference (shoal) row of the same mode.
pub fn fill_ratios_vs_shoal(systems: &mut [SystemRun]) {
    for mode in Mode::ALL {
        let reference_msg_per_s = systems
            .iter()
            .filter(|run| run.is_reference && run.status == Status::Measured)
            .flat_map(|run| run.rows.iter())
            .find(|row| row.mode == mode)
            .map(|row| row.msg_per_s);
        for row in systems.iter_mut().filter(|run| !run.is_reference).flat_map(|run| run.rows.iter_mut()) {
            if row.mode == mode {
                row.shoal_msg_per_s_ratio =
                    reference_msg_per_s.filter(|_| row.msg_per_s > 0.0).map(|r| r / row.msg_per_s);
            }
        }
    }
}

const TABLE_HEADER: [&str; 10] =
    ["system", "durability", "mode", "msg/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU s/M msg", "shoal ×"];
/// Columns from "mode" on; a system without numbers puts its reason there.
const TABLE_DETAIL_FROM: usize = 2;

/// The terminal table: one line per system and mode, aligned columns.
pub fn render_table(report: &Report) -> String {
    let mut lines: Vec<Vec<String>> = vec![TABLE_HEADER.iter().map(|cell| (*cell).to_owned()).collect()];
    let mut spans: Vec<Option<String>> = vec![None];
    for run in &report.systems {
        if run.status == Status::Measured {
            for row in &run.rows {
                lines.push(vec![
                    run.system.clone(),
                    run.durability.clone(),
                    row.mode_label.clone(),
                    group_thousands(row.msg_per_s),
                    format!("{:.1}", row.mb_per_s),
                    milliseconds(row.latency_p50_us),
                    milliseconds(row.latency_p99_us),
                    milliseconds(row.latency_p999_us),
                    row.server_cpu_s_per_million_messages.map_or_else(String::new, |cpu_s| format!("{cpu_s:.1}")),
                    row.shoal_msg_per_s_ratio.map_or_else(String::new, |ratio| format!("{ratio:.2}")),
                ]);
                spans.push(None);
            }
        } else {
            lines.push(vec![run.system.clone(), run.durability.clone()]);
            spans.push(Some(status_text(run)));
        }
    }
    let mut widths = [0usize; TABLE_HEADER.len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for (line, span) in lines.iter().zip(&spans) {
        let mut cells = Vec::new();
        for (column, cell) in line.iter().enumerate() {
            let width = widths[column];
            // Text columns left-aligned, numbers right-aligned.
            cells.push(if column <= TABLE_DETAIL_FROM { format!("{cell:<width$}") } else { format!("{cell:>width$}") });
        }
        if let Some(span) = span {
            cells.push(span.clone());
        }
        // An empty last column (the shoal ratio before shoal runs) leaves no dangling bar.
        let line = cells.join(" | ");
        let line = line.trim_end();
        writeln!(text, "{}", line.strip_suffix(" |").unwrap_or(line)).unwrap();
    }
    text
}

fn status_text(run: &SystemRun) -> String {
    let reason = run.reason.as_deref().unwrap_or("");
    match run.status {
        Status::Measured => String::new(),
        // The reason of a not-runnable system already starts with "not runnable yet".
        Status::NotRunnableYet => reason.to_owned(),
        Status::Skipped => format!("skipped: {reason}"),
        Status::Failed => format!("failed: {}", reason.lines().next().unwrap_or("")),
    }
}

fn milliseconds(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// 23456.7 -> "23,457".
fn group_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Versions, machine, command and durations: what the table needs to be
/// reproduced and trusted.
pub fn render_context(report: &Report) -> String {
    let machine = &report.machine;
    let mut text = String::new();
    writeln!(
        text,
        "machine: {} cores ({}), {:.0} GiB, Linux {}, data on {} ({}), load average {:.1} before, {:.1} after",
        machine.cores_count,
        machine.cpu_model,
        machine.memory_gib,
        machine.kernel,
        machine.data_dir,
        machine.data_dir_filesystem,
        machine.load_average_1min_start,
        machine.load_average_1min_end,
    )
    .unwrap();
    writeln!(text, "command: {}", report.command).unwrap();
    for run in &report.systems {
        let version = run.version.as_deref().map_or_else(String::new, |version| format!(" {version}"));
        writeln!(text, "{} ({}){version}: {:.0} s", run.system, run.durability, run.duration_s).unwrap();
    }
    writeln!(text, "total: {:.0} s", report.duration_s).unwrap();
    writeln!(
        text,
        "msg/s and MB/s (10^6 B of payload) per phase; latency per message for appends, per batch for reads; \
         CPU = server processes' user+system time; shoal × = shoal msg/s ÷ this row's"
    )
    .unwrap();
    text
}

pub fn render_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("the report is plain data")
}

const SVG_WIDTH_PX: usize = 1040;
const SVG_LABEL_WIDTH_PX: usize = 420;
const SVG_BAR_HEIGHT_PX: usize = 18;
const SVG_ROW_HEIGHT_PX: usize = 24;
const SVG_PANEL_TITLE_HEIGHT_PX: usize = 28;
const SVG_MARGIN_PX: usize = 12;
/// Room right of the longest bar for its value label.
const SVG_VALUE_LABEL_WIDTH_PX: usize = 230;
const SVG_BAR_COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];
const _: () = assert!(SVG_LABEL_WIDTH_PX + SVG_VALUE_LABEL_WIDTH_PX + 2 * SVG_MARGIN_PX < SVG_WIDTH_PX);

/// One panel per mode, one horizontal bar (msg/s) per system; each panel has
/// its own linear scale, since reads and pipelined appends are orders of
/// magnitude above one-at-a-time appends.
pub fn render_svg(report: &Report) -> String {
    let bar_width_max_px = (SVG_WIDTH_PX - SVG_LABEL_WIDTH_PX - SVG_VALUE_LABEL_WIDTH_PX - 2 * SVG_MARGIN_PX) as f64;
    let mut body = String::new();
    let mut y = SVG_MARGIN_PX;
    writeln!(
        body,
        r#"<text x="{SVG_MARGIN_PX}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        y + 14,
        escape(&format!(
            "Replicated appends of {} B messages, 3 nodes on loopback",
            report.settings.message_size_bytes
        ))
    )
    .unwrap();
    y += SVG_PANEL_TITLE_HEIGHT_PX;
    for mode in Mode::ALL {
        let bars: Vec<(usize, &SystemRun, Option<&Row>)> = report
            .systems
            .iter()
            .enumerate()
            .map(|(index, run)| (index, run, run.rows.iter().find(|row| row.mode == mode)))
            .collect();
        let mode_label = bars.iter().find_map(|(_, _, row)| row.map(|row| row.mode_label.clone()));
        let title = format!("{} (msg/s)", mode_label.unwrap_or_else(|| format!("{mode:?}")));
        writeln!(
            body,
            r#"<text x="{SVG_MARGIN_PX}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
            y + 16,
            escape(&title)
        )
        .unwrap();
        y += SVG_PANEL_TITLE_HEIGHT_PX;
        let scale_msg_per_s = bars.iter().filter_map(|(_, _, row)| row.map(|row| row.msg_per_s)).fold(0.0, f64::max);
        for (index, run, row) in bars {
            let label = format!("{} — {}", run.system, run.durability);
            writeln!(
                body,
                r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
                SVG_MARGIN_PX + SVG_LABEL_WIDTH_PX - 6,
                y + 13,
                escape(&label)
            )
            .unwrap();
            let bar_x = SVG_MARGIN_PX + SVG_LABEL_WIDTH_PX;
            match row {
                Some(row) if scale_msg_per_s > 0.0 => {
                    let width_px = (row.msg_per_s / scale_msg_per_s * bar_width_max_px).max(1.0);
                    let colour = SVG_BAR_COLOURS[index % SVG_BAR_COLOURS.len()];
                    writeln!(
                        body,
                        r#"<rect x="{bar_x}" y="{y}" width="{width_px:.1}" height="{SVG_BAR_HEIGHT_PX}" fill="{colour}"/>"#
                    )
                    .unwrap();
                    let per = if row.mode == Mode::Read { " per batch" } else { "" };
                    let value = format!(
                        "{} msg/s, p99{per} {} ms",
                        group_thousands(row.msg_per_s),
                        milliseconds(row.latency_p99_us)
                    );
                    writeln!(
                        body,
                        r#"<text x="{:.1}" y="{}" font-size="11">{}</text>"#,
                        bar_x as f64 + width_px + 6.0,
                        y + 13,
                        escape(&value)
                    )
                    .unwrap();
                }
                _ => {
                    // The reason is in the table and the JSON; a plot only needs the verdict.
                    let text = match run.status {
                        Status::Measured => "no data",
                        Status::NotRunnableYet => "not runnable yet",
                        Status::Skipped => "skipped (see the table)",
                        Status::Failed => "failed (see the table)",
                    };
                    writeln!(
                        body,
                        r##"<text x="{bar_x}" y="{}" font-size="11" fill="#777">{}</text>"##,
                        y + 13,
                        escape(text)
                    )
                    .unwrap();
                }
            }
            y += SVG_ROW_HEIGHT_PX;
        }
        y += SVG_MARGIN_PX;
    }
    let height_px = y + SVG_MARGIN_PX;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH_PX}\" height=\"{height_px}\" \
         viewBox=\"0 0 {SVG_WIDTH_PX} {height_px}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: Mode, msg_per_s: f64, p99_us: u64) -> Row {
        Row {
            mode,
            mode_label: match mode {
                Mode::OneAtATime => "append, 1 in flight".to_owned(),
                Mode::Pipelined => "append, 256 in flight".to_owned(),
                Mode::Read => "read, batches of 1000".to_owned(),
            },
            messages_count: 10_000,
            elapsed_s: 10_000.0 / msg_per_s,
            msg_per_s,
            mb_per_s: msg_per_s * 1024.0 / BYTES_PER_MB,
            latency_p50_us: p99_us / 2,
            latency_p99_us: p99_us,
            latency_p999_us: p99_us * 2,
            server_cpu_s_per_million_messages: Some(41.5),
            shoal_msg_per_s_ratio: None,
        }
    }

    fn measured(system: &str, durability: &str, rows: Vec<Row>) -> SystemRun {
        SystemRun {
            system: system.to_owned(),
            durability: durability.to_owned(),
            is_reference: system.starts_with("shoal"),
            version: Some("v2.15.1 (git b2fd3ef)".to_owned()),
            status: Status::Measured,
            reason: None,
            duration_s: 42.0,
            rows,
        }
    }

    fn shoal_not_runnable() -> SystemRun {
        SystemRun {
            system: "shoal (3 replicas, 1 shard each)".to_owned(),
            durability: "fsync on a quorum before ack".to_owned(),
            is_reference: true,
            version: None,
            status: Status::NotRunnableYet,
            reason: Some("not runnable yet: no cluster".to_owned()),
            duration_s: 0.0,
            rows: Vec::new(),
        }
    }

    fn report(systems: Vec<SystemRun>) -> Report {
        Report {
            machine: Machine {
                cpu_model: "AMD EPYC".to_owned(),
                cores_count: 2,
                memory_gib: 23.4,
                kernel: "6.18".to_owned(),
                data_dir: "/tmp".to_owned(),
                data_dir_filesystem: "ext4".to_owned(),
                load_average_1min_start: 0.5,
                load_average_1min_end: 2.0,
            },
            command: "cargo xtask bench peers".to_owned(),
            started_unix_s: 0,
            duration_s: 200.0,
            settings: Settings {
                message_size_bytes: 1024,
                warmup_count: 200,
                sequential_count_max: 20_000,
                sequential_duration_max_s: 10.0,
                pipelined_count_max: 200_000,
                pipelined_duration_max_s: 15.0,
                in_flight_max: 256,
                read_batch_count: 1000,
                read_duration_max_s: 10.0,
            },
            systems,
        }
    }

    fn nats_rows() -> Vec<Row> {
        vec![
            row(Mode::OneAtATime, 912.4, 2_400),
            row(Mode::Pipelined, 23_456.7, 24_100),
            row(Mode::Read, 150_000.0, 9_000),
        ]
    }

    #[test]
    fn a_not_runnable_shoal_keeps_its_row_and_leaves_the_ratios_empty() {
        let mut systems = vec![shoal_not_runnable(), measured("NATS JetStream", "fsync before ack", nats_rows())];
        fill_ratios_vs_shoal(&mut systems);
        assert!(systems[1].rows.iter().all(|row| row.shoal_msg_per_s_ratio.is_none()));
        let table = render_table(&report(systems));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("system "));
        assert!(lines[1].starts_with(
            "shoal (3 replicas, 1 shard each) | fsync on a quorum before ack | not runnable yet: no cluster"
        ));
        assert!(lines[2].contains("append, 1 in flight") && lines[2].contains("  912 |"), "{table}");
        assert!(lines[3].contains("23,457") && lines[3].contains("24.10"), "{table}");
        // Every measured line has the same column layout as the header.
        let bars = |line: &str| line.matches(" | ").count();
        assert_eq!(bars(lines[2]), bars(lines[0]) - 1, "the empty ratio column is trimmed: {table}");
        assert_eq!(lines[2].find("| append"), lines[3].find("| append"));
    }

    #[test]
    fn a_measured_shoal_fills_the_ratio_column_of_the_same_mode() {
        let shoal = measured(
            "shoal (3 replicas, 1 shard each)",
            "fsync on a quorum before ack",
            vec![row(Mode::OneAtATime, 1_824.8, 900), row(Mode::Pipelined, 46_913.4, 4_000)],
        );
        let mut systems = vec![shoal, measured("NATS JetStream", "fsync before ack", nats_rows())];
        fill_ratios_vs_shoal(&mut systems);
        let ratios: Vec<Option<f64>> = systems[1].rows.iter().map(|row| row.shoal_msg_per_s_ratio).collect();
        assert_eq!(ratios, [Some(2.0), Some(2.0), None]);
        assert!(systems[0].rows.iter().all(|row| row.shoal_msg_per_s_ratio.is_none()));
        let table = render_table(&report(systems));
        let nats_lines: Vec<&str> = table.lines().filter(|line| line.starts_with("NATS")).collect();
        assert!(nats_lines[0].ends_with(" 2.00") && nats_lines[1].ends_with(" 2.00"), "{table}");
        assert!(nats_lines[2].ends_with("41.5"), "no shoal read row, no read ratio: {table}");
    }

    #[test]
    fn the_json_names_every_column_and_the_status() {
        let systems = vec![shoal_not_runnable(), measured("etcd", "fsync before ack", nats_rows())];
        let json: serde_json::Value = serde_json::from_str(&render_json(&report(systems))).unwrap();
        assert_eq!(json["systems"][0]["status"], "not_runnable_yet");
        assert_eq!(json["systems"][0]["rows"].as_array().unwrap().len(), 0);
        let first = &json["systems"][1]["rows"][0];
        assert_eq!(first["mode"], "one_at_a_time");
        assert_eq!(first["latency_p99_us"], 2400);
        assert_eq!(first["server_cpu_s_per_million_messages"], 41.5);
        assert!(first["shoal_msg_per_s_ratio"].is_null());
        assert_eq!(json["settings"]["in_flight_max"], 256);
        assert_eq!(json["machine"]["cores_count"], 2);
    }

    #[test]
    fn the_svg_has_a_bar_per_measured_row_and_escapes_labels() {
        let systems = vec![shoal_not_runnable(), measured("A & B <fast>", "fsync before ack", nats_rows())];
        let svg = render_svg(&report(systems));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 3, "{svg}");
        assert!(svg.contains("A &amp; B &lt;fast&gt;"));
        assert!(!svg.contains("A & B"));
        assert_eq!(svg.matches("not runnable yet").count(), 3, "one note per panel");
    }

    #[test]
    fn thousands_are_grouped_and_latency_is_in_milliseconds() {
        assert_eq!(group_thousands(0.4), "0");
        assert_eq!(group_thousands(912.4), "912");
        assert_eq!(group_thousands(23_456.7), "23,457");
        assert_eq!(group_thousands(1_234_567.0), "1,234,567");
        assert_eq!(milliseconds(2_400), "2.40");
    }
}
