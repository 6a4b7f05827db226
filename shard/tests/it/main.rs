//! Integration tests of shoal-shard (one binary, one module per subject).

mod mem_io;
mod metadata_replay;
mod node;
mod partition_log;
