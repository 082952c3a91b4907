// The dependency graph a symbol list was made for (included by `build.rs` and by the startup tests;
// `scripts/hot-symbols.sh` computes the same in Python).
//
// A Rust function's linker name carries a hash of its crate's place in the dependency graph, so a list
// made before a change to `Cargo.lock` or to a crate's manifest names functions the new build does not
// define. The fingerprint is FNV-1a (64 bits) over, in this order, `Cargo.lock`, `Cargo.toml` and every
// `crates/*/Cargo.toml` (sorted by path), each as its path relative to the workspace, a zero byte, its
// contents and a zero byte. It changes with anything that can rename functions, and with some edits
// that cannot (a comment in a manifest): those cost a regeneration, never a wrong list.

/// The files the fingerprint covers, relative to the workspace at `root`, in their order.
fn fingerprinted_files(root: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut manifests: Vec<String> = std::fs::read_dir(root.join("crates"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| format!("crates/{}/Cargo.toml", entry.file_name().to_string_lossy()))
        .filter(|path| root.join(path).is_file())
        .collect();
    manifests.sort();
    Ok(["Cargo.lock".to_owned(), "Cargo.toml".to_owned()].into_iter().chain(manifests).collect())
}

/// The fingerprint of the workspace at `root`, as 16 lower-case hex digits.
fn dependency_fingerprint(root: &std::path::Path) -> std::io::Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in fingerprinted_files(root)? {
        let contents = std::fs::read(root.join(&path))?;
        for byte in path.bytes().chain([0]).chain(contents).chain([0]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{hash:016x}"))
}

/// The fingerprint recorded in a symbol list's first line (`# dependencies: <fingerprint>`), if any.
fn recorded_fingerprint(list: &str) -> Option<&str> {
    list.lines().next()?.strip_prefix("# dependencies: ").map(str::trim)
}
