//! Link settings of the `cortex` binary.
//!
//! Packed relative relocations (`-z pack-relative-relocs`, glibc's `DT_RELR`, GNU ld ≥ 2.38 with
//! glibc ≥ 2.36): the binary is position-independent, so at every start the dynamic loader rebases each
//! pointer stored in its read-only data (vtables, string tables). As `R_X86_64_RELATIVE` entries, 24 bytes
//! each, those instructions were 1.8 MiB of `.rela.dyn` read in full at start and resident for the life of
//! the process; packed, they are a bitmap of a few KiB (docs/PERFORMANCE.md section 22). The binary stays
//! position-independent (ASLR unchanged).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = |name: &str| std::env::var(name).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
