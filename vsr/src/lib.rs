//! shoal-vsr: Viewstamped Replication for one group (one namespace).
//!
//! Owns the `Io` trait (clock, storage, entropy, tasks), the 256-byte message
//! header and its checksums, the prepare journal (WAL), the superblock, the
//! replica state machine and client sessions.
//!
//! Must not touch threads, sockets, files or wall-clock time directly: every
//! effect goes through `Io`, so the simulator can run this code from one seed
//! and crash it between any two steps.

pub mod buggify;
pub mod checkpoint;
pub mod header;
pub mod io;
pub mod journal;
pub mod marks;
pub mod superblock;

pub use header::{Command, HEADER_SIZE_BYTES, Header, HeaderError, Operation};
pub use io::{BufResult, Io, IoFile, OpenMode};
pub mod message;
pub mod packed;
pub mod replica;
pub mod sessions;
pub mod state_machine;
pub mod state_transfer;
pub mod timeout;

pub use message::Message;
pub use replica::{Action, Replica, ReplicaConfig, Source, Status};
pub use state_machine::StateMachine;
