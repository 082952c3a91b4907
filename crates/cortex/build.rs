//! Link settings of the `cortex` binary (Linux, glibc). Both cut what an idle `cortex serve` keeps
//! resident; docs/PERFORMANCE.md section 22 has the figures.
//!
//! - Packed relative relocations (`-z pack-relative-relocs`, glibc's `DT_RELR`, glibc ≥ 2.36): the binary
//!   is position-independent, so at every start the dynamic loader rebases each pointer stored in its
//!   read-only data (vtables, string tables). As `R_X86_64_RELATIVE` entries, 24 bytes each, they were
//!   1.8 MiB of `.rela.dyn` read in full at start and resident for the life of the process; packed, they
//!   are a bitmap of 48 KiB. The binary stays position-independent (ASLR unchanged).
//! - Hot code first (`--symbol-ordering-file`, release builds linked by LLD, Rust's default linker on
//!   x86_64 Linux since 1.90): the kernel maps a binary's code in 64 KiB windows around each page
//!   executed, and the ≈ 7,600 functions a start, an idle minute and chat turns run were spread over half
//!   of the 45 MiB of code. `link/hot-symbols.txt` lists them (made by `scripts/hot-symbols.sh` from a
//!   callgrind run of that workload) so the linker places them together. A name the build does not
//!   define is skipped: a stale list costs residency, never correctness.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-symbols.txt");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if var("PROFILE") == "release" && default_lld() {
        let order = format!("{}/link/hot-symbols.txt", var("CARGO_MANIFEST_DIR"));
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the binary is linked by Rust's bundled LLD, which knows `--symbol-ordering-file`: the target's
/// default, unless a linker is configured (`RUSTC_LINKER`) or chosen through the compiler's flags.
fn default_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    env::var("TARGET").is_ok_and(|target| target == "x86_64-unknown-linux-gnu")
        && env::var_os("RUSTC_LINKER").is_none()
        && !flags.contains("linker")
        && !flags.contains("fuse-ld")
}
