//! Integration tests of shoal-shard (one binary, one module per subject).

mod mem_io;
mod node;
mod partition_log;
