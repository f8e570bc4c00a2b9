//! The process's allocator and how long it keeps freed memory.
//!
//! Tensor code allocates a fresh buffer for every operation. mimalloc keeps freed pages mapped
//! for reuse, where the system allocator returns large blocks to the OS and pays page faults on
//! every new one (measured: 2–10× on large elementwise ops, see docs/benchmarks.md). By default
//! mimalloc 3 still gives freed pages back ("purges" them) a second after they are freed, which is
//! shorter than the gap between one UNet step's use of a large buffer and the next step's: an SD
//! 1.5 step at 512² on 2 cores took ~27 000 page faults and spent a tenth of its time on them
//! (~0 faults per step with a 60 s delay; a 10 s delay still left ~4 000).

/// How long freed memory stays mapped before it goes back to the OS: longer than any step, so a
/// job reuses its own pages, short enough that an idle server shrinks back within a minute.
const PURGE_DELAY_MS: std::os::raw::c_long = 60_000;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (libmimalloc-sys does not export the
/// constant; the test below checks the index against the option's documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets the purge delay, unless the operator set `MIMALLOC_PURGE_DELAY` (mimalloc reads its
/// environment itself, and an explicit setting wins).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` only stores the value in mimalloc's option table; the option is
    // read at each purge decision, so setting it after allocations have happened is supported.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Gives the memory freed so far back to the OS now, instead of after the purge delay: for
/// after a model load, which frees what it read and will not allocate that much again (an int8
/// UNet frees its f32 weights, ~3.4 GB for SD 1.5).
pub fn release_freed() {
    // SAFETY: `mi_collect` only walks mimalloc's own free lists and unmaps unused pages.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_purge_delay_and_the_index_is_that_option() {
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc 3's default for `purge_delay` (options.c); the neighbouring options
            // (the deprecated eager_commit_delay, use_numa_nodes) default to 1 and 0.
            assert_eq!(get(), 1000);
        }
        configure();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), PURGE_DELAY_MS);
        }
    }
}
