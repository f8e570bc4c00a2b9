//! Every integration test of `nanoimg-edit` in one binary: one link instead of one per file, which
//! keeps the build small and fast (see ARCHITECTURE.md, "Tests").

mod ops;
mod plan;
mod planner;
