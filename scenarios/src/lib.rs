//! shoal-scenarios: the named scenarios and the `shoal-sim` command line.
//!
//! Owns the scenario catalog, swarm parameters and the user-facing CLI (run,
//! sweep, replay, shrink, reports). Runs on any machine: no system libraries.
