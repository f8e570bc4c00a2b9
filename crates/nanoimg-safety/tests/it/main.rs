//! Every integration test of `nanoimg-safety` in one binary: one link instead of one per file, which
//! keeps the build small and fast (see ARCHITECTURE.md, "Tests").

mod dev_set;
mod faces;
mod nsfw;
mod provenance;
mod semantic;
