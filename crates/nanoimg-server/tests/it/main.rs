//! Every integration test of `nanoimg-server` in one binary: one link instead of one per file, which
//! keeps the build small and fast (see ARCHITECTURE.md, "Tests").

mod a1111;
mod account;
mod api;
mod authz;
mod characters;
mod common;
mod contract;
mod erasure;
mod flux;
mod hostile;
mod llm_planner;
mod loras;
mod provenance;
mod references;
mod safety;
mod sessions;
mod shared_services;
mod studio;
