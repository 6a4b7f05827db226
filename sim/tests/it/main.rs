//! shoal-sim integration tests: one binary, one module per area.

mod journal_conformance;
mod shards;
