//! CPU allocation: which CPUs the shards run on, and pinning a thread to one.
//!
//! Owns the grammar of `sharding.cpu_allocation` and its translation into one
//! CPU per shard, using the machine's topology (hwlocality) to know which CPUs
//! exist and which belong to which NUMA node. Must not spawn threads or touch
//! compio: `bootstrap` does that.
//!
//! Grammar (whitespace around items is ignored):
//! - `all`: every CPU this process may run on;
//! - a list of CPUs and inclusive ranges: `0,2,5`, `0-3`, `0-3,8,10-11`;
//! - `numa:N`: every CPU of NUMA node `N` (its OS index).
//!
//! One shard runs per selected CPU, in ascending CPU order: shard `i` is pinned
//! to the `i`-th CPU of the set.

use std::collections::BTreeMap;
use std::fmt;

/// Shards are numbered with `u16` and the owner table reserves `u16::MAX` for
/// "no owner", so at most this many shards exist.
pub const SHARDS_COUNT_MAX: usize = u16::MAX as usize - 1;

/// What `sharding.cpu_allocation` asks for, before it is checked against the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAllocation {
    All,
    /// CPUs and ranges in the order written; expanded only after checking them
    /// against the topology, so a huge range cannot allocate.
    List(Vec<CpuItem>),
    Numa(usize),
}

/// One item of a CPU list: a single CPU or an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuItem {
    One(usize),
    Range { first: usize, last: usize },
}

/// Why a CPU allocation cannot be used. Each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error(
        "shard count is 0: set sharding.cpu_allocation to `all`, a CPU list such as `0,2,5`, \
         a range such as `0-3`, or numa:N naming a node that has CPUs"
    )]
    ShardsCountZero,
    #[error(
        "shard count {count} exceeds the owner table limit {max}: select at most {max} CPUs in \
         sharding.cpu_allocation"
    )]
    ShardsCountOverflow { count: usize, max: usize },
    #[error("sharding.cpu_allocation names CPU {cpu}, which this machine does not offer; available CPUs: {available}")]
    UnknownCpu { cpu: usize, available: String },
    #[error("sharding.cpu_allocation names CPU {cpu} twice: list each CPU once")]
    DuplicateCpu { cpu: usize },
    #[error("sharding.cpu_allocation names NUMA node {node}, which does not exist; nodes: {available}")]
    UnknownNumaNode { node: usize, available: String },
    #[error(
        "sharding.cpu_allocation {given:?} is not valid ({reason}): write `all`, a CPU list such \
         as `0,2,5`, a range such as `0-3`, or numa:N"
    )]
    BadSyntax { given: String, reason: String },
}

/// The CPUs of this machine that the process may use, by NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTopology {
    /// Allowed CPUs, ascending.
    pub cpus: Vec<usize>,
    /// NUMA node OS index → its allowed CPUs, ascending.
    pub numa_nodes: BTreeMap<usize, Vec<usize>>,
}

/// The machine's topology could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the CPU topology with hwloc: {reason}; check that libhwloc is installed and /sys is mounted")]
pub struct TopologyError {
    pub reason: String,
}

impl CpuTopology {
    /// Read the topology with hwlocality: the allowed CPU set of this process
    /// and the CPUs of every NUMA node.
    pub fn detect() -> Result<CpuTopology, TopologyError> {
        use hwlocality::Topology;
        use hwlocality::object::types::ObjectType;

        let topology = Topology::new().map_err(|error| TopologyError { reason: error.to_string() })?;
        let cpus: Vec<usize> = topology.cpuset().iter_set().map(usize::from).collect();
        let mut numa_nodes = BTreeMap::new();
        for node in topology.objects_with_type(ObjectType::NUMANode) {
            let Some(index) = node.os_index() else { continue };
            let node_cpus: Vec<usize> = match node.cpuset() {
                Some(set) => set.iter_set().map(usize::from).filter(|cpu| cpus.binary_search(cpu).is_ok()).collect(),
                None => Vec::new(),
            };
            numa_nodes.insert(index, node_cpus);
        }
        if cpus.is_empty() {
            return Err(TopologyError { reason: "hwloc reports no allowed CPU".to_string() });
        }
        Ok(CpuTopology { cpus, numa_nodes })
    }

    /// Resolve `allocation` to one CPU per shard, ascending.
    pub fn resolve(&self, allocation: &CpuAllocation) -> Result<Vec<usize>, AllocationError> {
        debug_assert!(self.cpus.windows(2).all(|w| w[0] < w[1]), "topology CPUs must be ascending");
        let selected = match allocation {
            CpuAllocation::All => self.cpus.clone(),
            CpuAllocation::Numa(node) => match self.numa_nodes.get(node) {
                Some(cpus) => cpus.clone(),
                None => {
                    return Err(AllocationError::UnknownNumaNode {
                        node: *node,
                        available: join_numbers(self.numa_nodes.keys().copied()),
                    });
                }
            },
            CpuAllocation::List(items) => {
                let mut selected = Vec::new();
                for item in items {
                    let (first, last) = match *item {
                        CpuItem::One(cpu) => (cpu, cpu),
                        CpuItem::Range { first, last } => (first, last),
                    };
                    debug_assert!(first <= last, "the parser orders ranges");
                    // Check both ends before expanding: a range is then bounded by
                    // the machine's CPU count, whatever number the operator typed.
                    for end in [first, last] {
                        if self.cpus.binary_search(&end).is_err() {
                            return Err(AllocationError::UnknownCpu { cpu: end, available: self.available() });
                        }
                    }
                    for &cpu in self.cpus.iter().filter(|&&cpu| cpu >= first && cpu <= last) {
                        selected.push(cpu);
                    }
                }
                selected.sort_unstable();
                if let Some(pair) = selected.windows(2).find(|w| w[0] == w[1]) {
                    return Err(AllocationError::DuplicateCpu { cpu: pair[0] });
                }
                selected
            }
        };
        check_shards_count(selected.len())?;
        debug_assert!(selected.windows(2).all(|w| w[0] < w[1]));
        Ok(selected)
    }

    fn available(&self) -> String {
        compress_ranges(&self.cpus)
    }
}

/// The shard count must fit the owner table: 1..=SHARDS_COUNT_MAX.
pub fn check_shards_count(count: usize) -> Result<u16, AllocationError> {
    if count == 0 {
        return Err(AllocationError::ShardsCountZero);
    }
    if count > SHARDS_COUNT_MAX {
        return Err(AllocationError::ShardsCountOverflow { count, max: SHARDS_COUNT_MAX });
    }
    Ok(u16::try_from(count).expect("bounded by SHARDS_COUNT_MAX"))
}

impl std::str::FromStr for CpuAllocation {
    type Err = AllocationError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| AllocationError::BadSyntax { given: given.to_string(), reason: reason.to_string() };
        let text = given.trim();
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.eq_ignore_ascii_case("all") {
            return Ok(CpuAllocation::All);
        }
        if let Some(node) = text.strip_prefix("numa:") {
            let node = parse_number(node.trim()).ok_or_else(|| bad("numa: must be followed by a node number"))?;
            return Ok(CpuAllocation::Numa(node));
        }
        let mut items = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad("empty item between commas"));
            }
            let item = match part.split_once('-') {
                None => CpuItem::One(parse_number(part).ok_or_else(|| bad("CPU numbers are decimal integers"))?),
                Some((first, last)) => {
                    let first = parse_number(first.trim()).ok_or_else(|| bad("a range is FIRST-LAST, e.g. 0-3"))?;
                    let last = parse_number(last.trim()).ok_or_else(|| bad("a range is FIRST-LAST, e.g. 0-3"))?;
                    if first > last {
                        return Err(bad("a range must go upwards, e.g. 0-3"));
                    }
                    CpuItem::Range { first, last }
                }
            };
            items.push(item);
        }
        Ok(CpuAllocation::List(items))
    }
}

impl fmt::Display for CpuAllocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuAllocation::All => write!(f, "all"),
            CpuAllocation::Numa(node) => write!(f, "numa:{node}"),
            CpuAllocation::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    match item {
                        CpuItem::One(cpu) => write!(f, "{cpu}")?,
                        CpuItem::Range { first, last } => write!(f, "{first}-{last}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Decimal digits only: no sign, no `+`, no hex.
fn parse_number(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn join_numbers(numbers: impl Iterator<Item = usize>) -> String {
    let parts: Vec<String> = numbers.map(|n| n.to_string()).collect();
    if parts.is_empty() { "none".to_string() } else { parts.join(",") }
}

/// `0,1,2,3,8` → `0-3,8`, for error messages that stay short on big machines.
fn compress_ranges(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    if parts.is_empty() { "none".to_string() } else { parts.join(",") }
}

/// Pin the calling thread to `cpu` with `sched_setaffinity`.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// The CPUs the calling thread may run on, ascending.
pub fn current_thread_affinity() -> nix::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    Ok((0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> CpuTopology {
        let mut numa_nodes = BTreeMap::new();
        numa_nodes.insert(0, vec![0, 1, 2, 3]);
        numa_nodes.insert(1, vec![4, 5, 6, 7]);
        numa_nodes.insert(2, vec![]);
        CpuTopology { cpus: (0..8).collect(), numa_nodes }
    }

    fn resolve(text: &str) -> Result<Vec<usize>, AllocationError> {
        topology().resolve(&text.parse()?)
    }

    #[test]
    fn all_lists_ranges_and_numa_resolve_to_ascending_cpus() {
        assert_eq!(resolve("all").unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(resolve(" ALL ").unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(resolve("0,2,5").unwrap(), vec![0, 2, 5]);
        assert_eq!(resolve("5, 2 ,0").unwrap(), vec![0, 2, 5], "shard order is CPU order");
        assert_eq!(resolve("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(resolve("0-1,4,6-7").unwrap(), vec![0, 1, 4, 6, 7]);
        assert_eq!(resolve("3-3").unwrap(), vec![3]);
        assert_eq!(resolve("numa:1").unwrap(), vec![4, 5, 6, 7]);
        assert_eq!(resolve("numa: 0").unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_range_expands_only_over_cpus_the_process_may_use() {
        // CPUs 2 and 3 are offline or outside the cgroup: a range skips them.
        let mut topology = topology();
        topology.cpus = vec![0, 1, 4, 5];
        assert_eq!(topology.resolve(&"0-4".parse().unwrap()).unwrap(), vec![0, 1, 4]);
    }

    #[test]
    fn syntax_errors_are_typed_and_tell_the_operator_the_grammar() {
        for bad in
            ["", " ", "0,,1", "a", "-1", "3-1", "0-", "-", "1-2-3", "numa:", "numa:x", "+1", "0x1", "1.5", "numa"]
        {
            let error = resolve(bad).unwrap_err();
            assert!(matches!(error, AllocationError::BadSyntax { .. }), "{bad:?} gave {error:?}");
            assert!(error.to_string().contains("numa:N"), "{error}");
        }
    }

    #[test]
    fn unknown_cpus_nodes_and_duplicates_are_typed() {
        assert_eq!(resolve("8").unwrap_err(), AllocationError::UnknownCpu { cpu: 8, available: "0-7".into() });
        assert_eq!(
            resolve("0-99999999999").unwrap_err(),
            AllocationError::UnknownCpu { cpu: 99_999_999_999, available: "0-7".into() }
        );
        assert!(matches!(resolve("numa:9").unwrap_err(), AllocationError::UnknownNumaNode { node: 9, .. }));
        assert_eq!(resolve("1,0-3").unwrap_err(), AllocationError::DuplicateCpu { cpu: 1 });
        let message = resolve("8").unwrap_err().to_string();
        assert!(message.contains("CPU 8") && message.contains("0-7"), "{message}");
    }

    #[test]
    fn shard_count_zero_and_overflow_are_distinct_errors() {
        assert_eq!(resolve("numa:2").unwrap_err(), AllocationError::ShardsCountZero);
        assert_eq!(check_shards_count(0).unwrap_err(), AllocationError::ShardsCountZero);
        assert_eq!(check_shards_count(1).unwrap(), 1);
        assert_eq!(check_shards_count(SHARDS_COUNT_MAX).unwrap(), u16::MAX - 1);
        assert_eq!(
            check_shards_count(SHARDS_COUNT_MAX + 1).unwrap_err(),
            AllocationError::ShardsCountOverflow { count: 65_535, max: 65_534 }
        );
        let huge = CpuTopology { cpus: (0..70_000).collect(), numa_nodes: BTreeMap::new() };
        assert_eq!(
            huge.resolve(&CpuAllocation::All).unwrap_err(),
            AllocationError::ShardsCountOverflow { count: 70_000, max: 65_534 }
        );
        assert!(AllocationError::ShardsCountZero.to_string().contains("cpu_allocation"));
    }

    #[test]
    fn display_round_trips_through_the_parser() {
        for text in ["all", "numa:3", "0,2,5", "0-3,8,10-11"] {
            let parsed: CpuAllocation = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<CpuAllocation>().unwrap(), parsed);
        }
    }

    #[test]
    fn compress_ranges_shortens_runs() {
        assert_eq!(compress_ranges(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(compress_ranges(&[]), "none");
    }

    #[test]
    fn the_real_topology_offers_the_cpus_this_thread_may_use() {
        let topology = CpuTopology::detect().expect("hwloc topology");
        assert!(!topology.cpus.is_empty());
        let all = topology.resolve(&CpuAllocation::All).unwrap();
        assert_eq!(all, topology.cpus);
        let affinity = current_thread_affinity().unwrap();
        for cpu in &all {
            assert!(affinity.contains(cpu), "hwloc CPU {cpu} is outside this thread's affinity {affinity:?}");
        }
    }

    #[test]
    fn pinning_a_thread_restricts_its_affinity_to_one_cpu() {
        let topology = CpuTopology::detect().expect("hwloc topology");
        let cpu = *topology.cpus.last().unwrap();
        // A scoped thread, so the test harness's own thread keeps its affinity.
        let seen = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin_current_thread(cpu).unwrap();
                    current_thread_affinity().unwrap()
                })
                .join()
                .unwrap()
        });
        assert_eq!(seen, vec![cpu]);
    }
}
