//! The workload every system runs: warm-up, one at a time, pipelined, reads.
//!
//! Every message carries its index in its first 8 bytes, so the read phase
//! checks that it got back exactly the messages that were acknowledged, not
//! just some bytes. Each phase is bounded by a count and a duration; each
//! operation by a timeout, so a stuck cluster fails the run instead of
//! hanging it.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::cpu;
use crate::error::BenchError;
use crate::system::System;

/// Highest latency the histograms resolve; longer operations have already
/// failed on their timeout.
pub const LATENCY_US_MAX: u64 = 120_000_000;
/// Significant decimal digits of the latency histograms (0.1% resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
const INDEX_SIZE_BYTES: usize = 8;

#[derive(Debug, Clone)]
pub struct Workload {
    pub message_size_bytes: usize,
    /// Appends before the measured phases (stream files created, leader settled).
    pub warmup_count: u64,
    pub sequential_count_max: u64,
    pub sequential_duration_max: Duration,
    pub pipelined_count_max: u64,
    pub pipelined_duration_max: Duration,
    pub in_flight_max: usize,
    pub read_batch_count: usize,
    pub read_duration_max: Duration,
    pub append_timeout: Duration,
    pub read_timeout: Duration,
}

impl Workload {
    pub fn validate(&self) -> Result<(), String> {
        if self.message_size_bytes < INDEX_SIZE_BYTES {
            return Err(format!("--message-size-bytes must be at least {INDEX_SIZE_BYTES} (the index)"));
        }
        if self.in_flight_max == 0 || self.read_batch_count == 0 {
            return Err("--in-flight and --read-batch must be at least 1".to_owned());
        }
        let timeout_us_max = Duration::from_micros(LATENCY_US_MAX);
        if self.append_timeout >= timeout_us_max || self.read_timeout >= timeout_us_max {
            return Err(format!("operation timeouts must stay below {} s", LATENCY_US_MAX / 1_000_000));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    OneAtATime,
    Pipelined,
    Read,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::OneAtATime, Mode::Pipelined, Mode::Read];

    pub fn describe(self, workload: &Workload) -> String {
        match self {
            Mode::OneAtATime => "append, 1 in flight".to_owned(),
            Mode::Pipelined => format!("append, {} in flight", workload.in_flight_max),
            Mode::Read => format!("read, batches of {}", workload.read_batch_count),
        }
    }
}

#[derive(Debug)]
pub struct PhaseResult {
    pub mode: Mode,
    pub messages_count: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Per message for appends (issue to acknowledgement), per batch for reads.
    pub latency_us: Histogram<u64>,
    pub server_cpu_ticks: u64,
}

/// Message `index`: the index (little endian) then filler that differs per
/// message, so no layer can deduplicate or trivially compress the bodies.
pub fn payload(index: u64, size_bytes: usize) -> Vec<u8> {
    assert!(size_bytes >= INDEX_SIZE_BYTES);
    let mut bytes = vec![0; size_bytes];
    bytes[..INDEX_SIZE_BYTES].copy_from_slice(&index.to_le_bytes());
    // An xorshift stream seeded by the index, eight bytes a step: a filler
    // made a byte at a time cost the load generator about as much CPU per
    // message as the server spends on it, on cores the two share.
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.to_le_bytes()
    };
    let mut words = bytes[INDEX_SIZE_BYTES..].chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&next());
    }
    let tail = words.into_remainder();
    let tail_len = tail.len();
    tail.copy_from_slice(&next()[..tail_len]);
    bytes
}

/// The index a payload carries, if it is long enough to carry one.
pub fn payload_index(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..INDEX_SIZE_BYTES)?.try_into().ok()?))
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_US_MAX);
    histogram.record(latency_us).expect("clamped into the histogram's range");
}

/// Run the whole workload against a started system.
pub async fn run<S: System>(
    system: &mut S,
    workload: &Workload,
    system_name: &'static str,
) -> Result<Vec<PhaseResult>, BenchError> {
    let mut next_index = 0;
    for _ in 0..workload.warmup_count {
        append_one(system, workload, system_name, &mut next_index).await?;
    }
    let pids = system.server_pids();
    let mut results = Vec::with_capacity(Mode::ALL.len());

    let phase = Phase::begin(Mode::OneAtATime, &pids)?;
    let mut latency_us = latency_histogram();
    let first_index = next_index;
    while next_index - first_index < workload.sequential_count_max
        && phase.started.elapsed() < workload.sequential_duration_max
    {
        let issued = Instant::now();
        let append = system.append_alone(payload(next_index, workload.message_size_bytes));
        within_timeout(append, workload, system_name).await?;
        next_index += 1;
        record(&mut latency_us, issued.elapsed());
    }
    results.push(phase.end(next_index - first_index, workload, latency_us, &pids)?);
    eprintln!("  {}", summary_line(results.last().expect("just pushed")));

    let phase = Phase::begin(Mode::Pipelined, &pids)?;
    let first_index = next_index;
    let latency_us = append_pipelined(system, workload, system_name, &mut next_index, phase.started).await?;
    results.push(phase.end(next_index - first_index, workload, latency_us, &pids)?);
    eprintln!("  {}", summary_line(results.last().expect("just pushed")));

    if let Err(why) = system.supports_reads() {
        eprintln!("  Read: n/a ({why})");
        return Ok(results);
    }
    let phase = Phase::begin(Mode::Read, &pids)?;
    let (read_count, read_bytes, latency_us) =
        read_back(system, workload, system_name, next_index, phase.started).await?;
    let mut read = phase.end(read_count, workload, latency_us, &pids)?;
    read.payload_bytes = read_bytes;
    results.push(read);
    eprintln!("  {}", summary_line(results.last().expect("just pushed")));
    Ok(results)
}

struct Phase {
    mode: Mode,
    started: Instant,
    cpu_ticks_before: u64,
}

impl Phase {
    fn begin(mode: Mode, pids: &[u32]) -> Result<Phase, BenchError> {
        Ok(Phase { mode, cpu_ticks_before: cpu::read_total_ticks(pids)?, started: Instant::now() })
    }

    fn end(
        self,
        messages_count: u64,
        workload: &Workload,
        latency_us: Histogram<u64>,
        pids: &[u32],
    ) -> Result<PhaseResult, BenchError> {
        let elapsed = self.started.elapsed();
        let cpu_ticks_after = cpu::read_total_ticks(pids)?;
        Ok(PhaseResult {
            mode: self.mode,
            messages_count,
            payload_bytes: messages_count * workload.message_size_bytes as u64,
            elapsed,
            latency_us,
            server_cpu_ticks: cpu_ticks_after.saturating_sub(self.cpu_ticks_before),
        })
    }
}

fn summary_line(result: &PhaseResult) -> String {
    let elapsed_s = result.elapsed.as_secs_f64();
    format!(
        "{:?}: {} messages in {:.1} s = {:.0} msg/s, p50 {} us, p99 {} us",
        result.mode,
        result.messages_count,
        elapsed_s,
        result.messages_count as f64 / elapsed_s.max(f64::MIN_POSITIVE),
        result.latency_us.value_at_quantile(0.5),
        result.latency_us.value_at_quantile(0.99),
    )
}

async fn append_one<S: System>(
    system: &S,
    workload: &Workload,
    system_name: &'static str,
    next_index: &mut u64,
) -> Result<(), BenchError> {
    let append = system.append(payload(*next_index, workload.message_size_bytes));
    within_timeout(append, workload, system_name).await?;
    *next_index += 1;
    Ok(())
}

/// Await one append, failing it at the workload's append timeout.
async fn within_timeout(
    append: impl Future<Output = Result<(), BenchError>>,
    workload: &Workload,
    system_name: &'static str,
) -> Result<(), BenchError> {
    tokio::time::timeout(workload.append_timeout, append)
        .await
        .map_err(|_| BenchError::AppendTimeout { system: system_name, timeout_s: workload.append_timeout.as_secs() })?
}

/// Keep `in_flight_max` appends outstanding until the count or time bound.
/// Latency runs from the moment an append is issued to its acknowledgement.
async fn append_pipelined<S: System>(
    system: &S,
    workload: &Workload,
    system_name: &'static str,
    next_index: &mut u64,
    started: Instant,
) -> Result<Histogram<u64>, BenchError> {
    let mut latency_us = latency_histogram();
    let mut tasks = JoinSet::new();
    let mut issued_count = 0;
    let timeout = workload.append_timeout;
    loop {
        while tasks.len() < workload.in_flight_max
            && issued_count < workload.pipelined_count_max
            && started.elapsed() < workload.pipelined_duration_max
        {
            let append = system.append(payload(*next_index + issued_count, workload.message_size_bytes));
            let issued = Instant::now();
            tasks.spawn(async move {
                tokio::time::timeout(timeout, append)
                    .await
                    .map_err(|_| BenchError::AppendTimeout { system: system_name, timeout_s: timeout.as_secs() })??;
                Ok::<_, BenchError>(issued.elapsed())
            });
            issued_count += 1;
        }
        let Some(joined) = tasks.join_next().await else { break };
        // The first failure ends the phase; dropping `tasks` aborts the rest.
        let latency = joined.map_err(|error| BenchError::Task { message: error.to_string() })??;
        record(&mut latency_us, latency);
    }
    assert!(tasks.is_empty());
    *next_index += issued_count;
    Ok(latency_us)
}

/// Read every acknowledged message back in batches (bounded by time), and
/// check each carries an index that was written and was not read before.
async fn read_back<S: System>(
    system: &mut S,
    workload: &Workload,
    system_name: &'static str,
    written_count: u64,
    started: Instant,
) -> Result<(u64, u64, Histogram<u64>), BenchError> {
    let mut latency_us = latency_histogram();
    let mut seen = vec![false; usize::try_from(written_count).expect("written count fits in memory")];
    let (mut read_count, mut read_bytes) = (0u64, 0u64);
    while read_count < written_count && started.elapsed() < workload.read_duration_max {
        let want_count =
            workload.read_batch_count.min(usize::try_from(written_count - read_count).unwrap_or(usize::MAX));
        let issued = Instant::now();
        let batch = tokio::time::timeout(workload.read_timeout, system.read(want_count)).await.map_err(|_| {
            BenchError::ReadTimeout { system: system_name, timeout_s: workload.read_timeout.as_secs() }
        })??;
        record(&mut latency_us, issued.elapsed());
        if batch.indices.is_empty() {
            return Err(BenchError::ReadMismatch {
                system: system_name,
                index: read_count,
                problem: "was acknowledged but a read found nothing at or after it",
            });
        }
        check_read_batch(&mut seen, &batch.indices, system_name)?;
        read_count += batch.indices.len() as u64;
        read_bytes += batch.payload_bytes;
    }
    Ok((read_count, read_bytes, latency_us))
}

fn check_read_batch(seen: &mut [bool], indices: &[u64], system_name: &'static str) -> Result<(), BenchError> {
    for &index in indices {
        let slot = usize::try_from(index).ok().and_then(|slot| seen.get_mut(slot)).ok_or(BenchError::ReadMismatch {
            system: system_name,
            index,
            problem: "was never written",
        })?;
        if *slot {
            return Err(BenchError::ReadMismatch { system: system_name, index, problem: "was read twice" });
        }
        *slot = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_index_and_differs_from_its_neighbours() {
        let first = payload(41, 1024);
        let second = payload(42, 1024);
        assert_eq!(first.len(), 1024);
        assert_eq!(payload_index(&first), Some(41));
        assert_eq!(payload_index(&second), Some(42));
        assert_ne!(first[8..], second[8..]);
        assert_eq!(payload_index(&[1, 2, 3]), None);
    }

    #[test]
    fn a_read_of_an_unwritten_or_repeated_message_is_a_mismatch() {
        let mut seen = vec![false; 4];
        check_read_batch(&mut seen, &[2, 0], "test").unwrap();
        let repeated = check_read_batch(&mut seen, &[1, 2], "test").unwrap_err();
        assert!(matches!(repeated, BenchError::ReadMismatch { index: 2, problem: "was read twice", .. }));
        let unwritten = check_read_batch(&mut seen, &[4], "test").unwrap_err();
        assert!(matches!(unwritten, BenchError::ReadMismatch { index: 4, problem: "was never written", .. }));
    }
}
