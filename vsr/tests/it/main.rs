//! shoal-vsr integration tests: one binary, one module per area.

mod aside_replaced_older;
mod aside_superseded;
mod aside_truncated;
mod checkpoint_deferred;
mod checkpoint_durable;
mod checkpoint_view;
mod faulty_voters;
mod harness;
mod held_primary;
mod packed;
mod rejoin_kept_promises;
mod rejoining_primary;
mod repair_ahead;
mod repair_rotation;
mod replica_bad_input;
mod request_queue;
mod stale_dvc;
mod stale_input;
mod stale_prepares;
mod stale_start_view;
mod state_transfer_chunks;
mod stories;
mod stories_state;
mod two_wiped_ackers;
mod unvouched_kept;
