//! swarm-buggify: swarm's draw with the code's buggify sites on
//! (`shoal_vsr::buggify`). Off, buggify changes nothing; on, its sites fire
//! and a seed still replays bit for bit.

use shoal_sim::Verdict;

#[test]
fn buggify_off_is_swarm_and_on_fires_its_sites_and_replays_bit_for_bit() {
    let mut fired = std::collections::BTreeSet::new();
    for seed in 0..24 {
        let mut off = shoal_scenarios::catalog::swarm_buggify(seed);
        off.buggify_ppm = 0;
        let swarm = shoal_sim::run(&shoal_scenarios::catalog::swarm(seed));
        assert_eq!(shoal_sim::run(&off).trace_hash, swarm.trace_hash, "seed {seed}: off, buggify changes nothing");

        let config = shoal_scenarios::catalog::swarm_buggify(seed);
        let on = shoal_sim::run(&config);
        assert!(matches!(on.verdict, Verdict::Pass), "swarm-buggify seed {seed}: {:?}", on.verdict);
        assert_eq!(shoal_sim::run(&config).trace_hash, on.trace_hash, "seed {seed} replays bit for bit");
        let sites = on.marks.iter().filter(|(name, count)| name.starts_with("buggify_") && **count > 0);
        fired.extend(sites.map(|(name, _)| name.clone()));
    }
    assert!(fired.len() >= 4, "the sites fired over 24 seeds: {fired:?}");
}
