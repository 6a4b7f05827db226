//! CPU time of the server processes, read from `/proc/<pid>/stat`.
//!
//! The table charges each system the CPU its own server processes burned
//! during a phase (user + system, all threads), so a system that buys
//! throughput with spare cores shows it. The load generator's CPU is not
//! counted: it runs the same client work pattern for every system.

use std::path::Path;
use std::process::Command;

/// Linux's default `USER_HZ`; used only when `getconf CLK_TCK` cannot run.
const CLOCK_TICKS_PER_S_DEFAULT: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("cannot read {path}: {source} (did the server process exit?)")]
    Read { path: String, source: std::io::Error },
    #[error("{path} has no `)` closing the command name: not a /proc/<pid>/stat file")]
    NoCommandEnd { path: String },
    #[error("{path} has {fields_count} fields after the command name; utime and stime need at least 13")]
    TooFewFields { path: String, fields_count: usize },
    #[error("{path}: field {field} is `{value}`, not a tick count")]
    NotANumber { path: String, field: &'static str, value: String },
}

/// CPU time one process has used so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub user_ticks: u64,
    pub system_ticks: u64,
}

impl CpuTicks {
    pub fn total_ticks(self) -> u64 {
        self.user_ticks + self.system_ticks
    }
}

/// Parse the text of `/proc/<pid>/stat`. `path` only names the file in errors.
///
/// The command name (field 2) is in parentheses and may itself hold spaces
/// and parentheses, so fields are counted from the *last* `)`: after it come
/// state (field 3) ... utime (field 14) and stime (field 15), see proc(5).
pub fn parse_stat(path: &str, text: &str) -> Result<CpuTicks, CpuError> {
    let command_end = text.rfind(')').ok_or_else(|| CpuError::NoCommandEnd { path: path.to_owned() })?;
    let fields: Vec<&str> = text[command_end + 1..].split_whitespace().collect();
    // Index 0 is field 3 (state), so field N is at index N - 3.
    const UTIME_INDEX: usize = 14 - 3;
    const STIME_INDEX: usize = 15 - 3;
    if fields.len() <= STIME_INDEX {
        return Err(CpuError::TooFewFields { path: path.to_owned(), fields_count: fields.len() });
    }
    let number = |index: usize, field: &'static str| {
        fields[index].parse::<u64>().map_err(|_| CpuError::NotANumber {
            path: path.to_owned(),
            field,
            value: fields[index].to_owned(),
        })
    };
    Ok(CpuTicks { user_ticks: number(UTIME_INDEX, "utime")?, system_ticks: number(STIME_INDEX, "stime")? })
}

pub fn read_process_ticks(pid: u32) -> Result<CpuTicks, CpuError> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(Path::new(&path)).map_err(|source| CpuError::Read { path: path.clone(), source })?;
    parse_stat(&path, &text)
}

/// Sum of user + system ticks over `pids`.
pub fn read_total_ticks(pids: &[u32]) -> Result<u64, CpuError> {
    pids.iter().try_fold(0, |total, &pid| Ok(total + read_process_ticks(pid)?.total_ticks()))
}

/// `USER_HZ`, the unit of utime and stime.
pub fn clock_ticks_per_s() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks: &u64| ticks > 0)
        .unwrap_or(CLOCK_TICKS_PER_S_DEFAULT)
}

/// CPU seconds per million messages: the cost column of the table.
pub fn cpu_s_per_million_messages(ticks: u64, clock_ticks_per_s: u64, messages_count: u64) -> Option<f64> {
    assert!(clock_ticks_per_s > 0);
    if messages_count == 0 {
        return None;
    }
    let cpu_s = ticks as f64 / clock_ticks_per_s as f64;
    Some(cpu_s * 1_000_000.0 / messages_count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from a nats-server process, shortened after field 20.
    const NATS_STAT: &str = "4344 (nats-server) S 4300 4344 4300 34816 4344 1077936384 2735 0 0 0 \
                             1234 567 0 0 20 0 12 0 95473 1300000000";

    #[test]
    fn utime_and_stime_are_fields_14_and_15() {
        let ticks = parse_stat("/proc/4344/stat", NATS_STAT).unwrap();
        assert_eq!(ticks, CpuTicks { user_ticks: 1234, system_ticks: 567 });
        assert_eq!(ticks.total_ticks(), 1801);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let text = "77 (etcd (raft) x) R 1 77 77 0 -1 4194304 100 0 0 0 42 8 0 0 20 0 9 0 1000 2000";
        let ticks = parse_stat("/proc/77/stat", text).unwrap();
        assert_eq!(ticks, CpuTicks { user_ticks: 42, system_ticks: 8 });
    }

    #[test]
    fn a_truncated_file_is_an_error_that_names_the_file() {
        let error = parse_stat("/proc/9/stat", "9 (sh) S 1 9 9 0").unwrap_err();
        assert!(matches!(error, CpuError::TooFewFields { fields_count: 5, .. }), "{error}");
        assert!(error.to_string().contains("/proc/9/stat"));
    }

    #[test]
    fn a_file_without_a_command_name_is_rejected() {
        let error = parse_stat("/proc/9/stat", "9 sh S 1").unwrap_err();
        assert!(matches!(error, CpuError::NoCommandEnd { .. }));
    }

    #[test]
    fn a_non_numeric_utime_is_rejected() {
        let text = "9 (sh) S 1 9 9 0 -1 0 0 0 0 0 many 8 0 0 20 0 1 0 10 20";
        let error = parse_stat("/proc/9/stat", text).unwrap_err();
        assert!(matches!(error, CpuError::NotANumber { field: "utime", .. }), "{error}");
    }

    #[test]
    fn this_process_has_readable_cpu_ticks() {
        read_process_ticks(std::process::id()).unwrap();
    }

    #[test]
    fn cost_is_cpu_seconds_scaled_to_a_million_messages() {
        // 250 ticks at 100 Hz = 2.5 s for 500k messages -> 5 s per million.
        assert_eq!(cpu_s_per_million_messages(250, 100, 500_000), Some(5.0));
        assert_eq!(cpu_s_per_million_messages(250, 100, 0), None);
    }
}
