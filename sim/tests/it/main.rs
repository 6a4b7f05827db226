//! shoal-sim integration tests: one binary, one module per area.

mod checkers;
mod dir_entries;
mod fixtures;
mod group_damage;
mod journal_bad_input;
mod journal_batch;
mod journal_conformance;
mod journal_model;
mod journal_storage_faults;
mod metadata_replay;
mod metadata_wal;
mod partition_lost_fsync;
mod partition_open_files;
mod partition_page_damage;
mod partition_sm;
mod restart_faults;
mod shards;
mod superblock;
mod transient_reads;
mod vsr_scenarios;
