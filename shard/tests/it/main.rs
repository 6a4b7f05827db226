//! Integration tests of shoal-shard (one binary, one module per subject).

mod mem_io;
mod metadata_replay;
mod partition_log;
