//! shoal-vsr integration tests: one binary, one module per area.

mod replica_bad_input;
