fn main() {
    for n in [1u16, 2, 8] {
        let o = shoal_sim::run_shard_world(&shoal_sim::ShardWorldConfig::new(11, n));
        println!("{:?}\n{:?} t={} hash={:#x}", o.verdict, o.counters, o.virtual_time_ns, o.trace_hash);
        let o = shoal_sim::run_shard_world(&shoal_sim::ShardWorldConfig::swarm(5, n));
        println!("{:?}\n{:?}\n{:?} t={}", o.config.faults, o.verdict, o.counters, o.virtual_time_ns);
    }
}
