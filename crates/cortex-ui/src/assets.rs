//! Static files compiled into the binary (htmx vendored from npm; our stylesheet and script). Each URL carries a fingerprint of the file's bytes
//! (`?v=<hash>`), so the server can mark responses immutable and a new build still reaches browsers.

use std::sync::LazyLock;

/// One static file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// Fingerprint of `bytes` (FNV-1a, hex), part of every URL of the asset.
    pub version: String,
}

impl Asset {
    /// The URL pages link to.
    pub fn url(&self) -> String {
        format!("/ui/static/{}?v={}", self.name, self.version)
    }
}

const JS: &str = "text/javascript; charset=utf-8";

/// (file name, content type, bytes) of every asset; versions in the vendored names follow upstream.
const FILES: &[(&str, &str, &[u8])] = &[
    ("htmx-2.0.11.min.js", JS, include_bytes!("../static/htmx-2.0.11.min.js")),
    ("cortex.js", JS, include_bytes!("../static/cortex.js")),
    ("cortex.css", "text/css; charset=utf-8", include_bytes!("../static/cortex.css")),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, content_type, bytes)| Asset { name, content_type, bytes, version: fingerprint(bytes) })
        .collect()
});

fn fingerprint(bytes: &[u8]) -> String {
    let hash = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{hash:016x}")
}

/// The asset called `name`, if there is one.
pub fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// The URL of a known asset; an unknown name is a programming error caught by the tests.
pub fn url(name: &str) -> String {
    get(name).map(Asset::url).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_versioned_url() {
        for (name, _, _) in FILES {
            let url = url(name);
            assert!(url.starts_with(&format!("/ui/static/{name}?v=")), "{url}");
        }
        assert!(get("nothing.js").is_none());
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }
}
