//! Link settings of the `cortex` binary (Linux, glibc). Both cut what an idle `cortex serve` keeps
//! resident; docs/PERFORMANCE.md section 22 has the figures.
//!
//! - Packed relative relocations (`-z pack-relative-relocs`, glibc's `DT_RELR`, when the glibc is 2.36
//!   or later): the binary is position-independent, so at every start the dynamic loader rebases each
//!   pointer stored in its read-only data (vtables, string tables). As `R_X86_64_RELATIVE` entries, 24
//!   bytes each, they were 1.8 MiB of `.rela.dyn` read in full at start and resident for the life of the
//!   process; packed, they are a bitmap of 48 KiB. The binary stays position-independent (ASLR unchanged).
//! - Hot code first (`--symbol-ordering-file`, release builds linked by LLD, Rust's default linker on
//!   x86_64 Linux since 1.90): the kernel maps a binary's code in 64 KiB windows around each page
//!   executed, and the ≈ 9,200 functions a start, idle probes and chat turns run were spread over half
//!   of the 45 MiB of code. `link/hot-symbols.txt` lists them (made by `scripts/hot-symbols.sh` from a
//!   callgrind run of that workload) so the linker places them together. A name the build does not
//!   define is skipped: a stale list costs residency, never correctness. Function names change with the
//!   dependency graph, so the list records the graph it was made for (`link/fingerprint.rs`) and a
//!   release build made from another graph warns; `startup::the_hot_symbol_list_was_made_for_these_
//!   dependencies` fails.

use std::env;
use std::path::Path;

include!("link/fingerprint.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-symbols.txt");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    if glibc_reads_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if var("PROFILE") == "release" && default_lld() {
        let order = format!("{}/link/hot-symbols.txt", var("CARGO_MANIFEST_DIR"));
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        warn_if_stale(Path::new(&order));
    }
}

/// Warns when the symbol list was made for another dependency graph: most of its names would then be
/// missing from this build, and an idle server keeps about 10 MiB more of its code resident.
fn warn_if_stale(list: &Path) {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../..");
    for file in fingerprinted_files(&root).unwrap_or_default() {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let current = dependency_fingerprint(&root).ok();
    let listed = std::fs::read_to_string(list).ok();
    if current.is_none() || current.as_deref() != listed.as_deref().and_then(recorded_fingerprint) {
        println!(
            "cargo:warning=link/hot-symbols.txt was made for other dependencies; after this build, run \
             scripts/hot-symbols.sh target/release/cortex (docs/PERFORMANCE.md section 22)"
        );
    }
}

/// Whether this machine's glibc applies `DT_RELR` (2.36 or later, `getconf GNU_LIBC_VERSION`). An older
/// one would ignore the packed relocations and the binary would crash at start, so they are left out
/// there (and when the version cannot be read). A native build checks the glibc it will run on.
fn glibc_reads_packed_relocations() -> bool {
    let Ok(output) = std::process::Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let mut numbers = version.trim().trim_start_matches("glibc ").split('.').map(str::parse::<u32>);
    matches!((numbers.next(), numbers.next()), (Some(Ok(major)), Some(Ok(minor))) if (major, minor) >= (2, 36))
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
