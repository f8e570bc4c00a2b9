//! Every integration test of `nanoimg` in one binary: one link instead of one per file, which
//! keeps the build small and fast (see ARCHITECTURE.md, "Tests").

mod bundled;
mod cli;
mod common;
mod fetch;
mod pull;
mod scale_out;
mod server;
