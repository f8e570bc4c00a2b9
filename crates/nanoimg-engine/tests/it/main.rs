//! Every integration test of `nanoimg-engine` in one binary: one link instead of one per file, which
//! keeps the build small and fast (see ARCHITECTURE.md, "Tests").

mod checkpoint;
mod codec_mutations;
mod common;
mod distilled;
mod flux;
mod hooks;
mod int8;
mod loading;
mod lora;
mod parity;
mod pipelines;
mod reference;
mod textual_inversion;
