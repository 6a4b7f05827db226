//! Integration tests of shoal-runtime: one binary, one module per area.

mod real_io;
mod server;
mod support;
