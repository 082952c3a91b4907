//! Keeping secret values out of everything we store, stream or log (SPEC Appendix B "Credentials").
//!
//! A [`Redactor`] is built from a set of secret values. It replaces each value and its common encodings
//! with [`REDACTED`]: the plain text, the credential part of `Scheme credential` values, JSON-escaped,
//! percent-encoded (upper- and lower-case hex), hex (both cases), and base64 / base64url **at any
//! alignment** — the stable middle of the encoding, so a secret is found inside a longer encoded string
//! too (`base64("user:" + secret)`, a base64 JSON blob), not only when it was encoded alone.
//!
//! [`StreamRedactor`] applies a redactor to text that arrives in pieces (streamed model output): it holds
//! back the tail of what it has seen while that tail could still be the start of a secret, so a value
//! split across two chunks is never let through half by half.
//!
//! [`SharedRedactor`] is the process's current redactor, swapped as a whole when credentials change;
//! readers take a cheap snapshot.

use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// Values (and encoded forms) shorter than this are not treated as secrets: they would blank out
/// ordinary words.
pub const MIN_SECRET_LEN: usize = 4;

/// A set of secret values in every form they are commonly echoed in.
#[derive(Clone, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    /// Every form, for [`StreamRedactor`]'s look-ahead.
    needles: Vec<String>,
    longest: usize,
}

impl Redactor {
    /// The redactor for these secret values (empty and too-short values are ignored).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles: Vec<String> = secrets
            .into_iter()
            .flat_map(|value| forms(value.as_ref()))
            .filter(|needle| needle.len() >= MIN_SECRET_LEN && needle != REDACTED)
            .collect();
        needles.sort();
        needles.dedup();
        if needles.is_empty() {
            return Self::default();
        }
        let longest = needles.iter().map(String::len).max().unwrap_or(0);
        // Leftmost-longest: of overlapping forms (a value and its credential part) the longer one wins.
        let matcher = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&needles).ok();
        Self { matcher, needles, longest }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret form replaced by [`REDACTED`].
    pub fn apply(&self, text: &str) -> String {
        match &self.matcher {
            Some(matcher) if matcher.is_match(text) => matcher.replace_all(text, &vec![REDACTED; self.needles.len()]),
            _ => text.to_owned(),
        }
    }

    /// Whether `text` holds a secret form.
    pub fn finds(&self, text: &str) -> bool {
        self.matcher.as_ref().is_some_and(|matcher| matcher.is_match(text))
    }

    /// Every string (and object key) inside `value` redacted.
    pub fn apply_json(&self, value: &Value) -> Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(text) => Value::String(self.apply(text)),
            Value::Array(items) => Value::Array(items.iter().map(|item| self.apply_json(item)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(key, item)| (self.apply(key), self.apply_json(item))).collect())
            }
            other => other.clone(),
        }
    }

    /// A streaming view of this redactor.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor { redactor: self.clone(), pending: String::new() }
    }

    /// Length in bytes of the longest form (0 when empty).
    fn longest(&self) -> usize {
        self.longest
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("forms", &self.needles.len()).finish()
    }
}

/// Redacts text that arrives in pieces: [`StreamRedactor::push`] returns what is safe to pass on now,
/// [`StreamRedactor::finish`] the rest.
#[derive(Debug, Clone)]
pub struct StreamRedactor {
    redactor: Redactor,
    pending: String,
}

impl StreamRedactor {
    /// Adds a piece; returns the redacted text that can no longer be part of a secret.
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        if self.redactor.is_empty() {
            return std::mem::take(&mut self.pending);
        }
        let redacted = self.redactor.apply(&self.pending);
        let keep = self.held_back(&redacted);
        let cut = redacted.len() - keep;
        self.pending = redacted[cut..].to_owned();
        redacted[..cut].to_owned()
    }

    /// Ends the stream: the redacted rest.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.redactor.apply(&rest)
    }

    /// Drops what is held back (the stream started over).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Bytes at the end of `text` that are a proper prefix of some secret form (the longest such tail).
    fn held_back(&self, text: &str) -> usize {
        let max = self.redactor.longest().saturating_sub(1).min(text.len());
        for len in (1..=max).rev() {
            let start = text.len() - len;
            if !text.is_char_boundary(start) {
                continue;
            }
            let tail = &text[start..];
            if self.redactor.needles.iter().any(|needle| needle.len() > len && needle.starts_with(tail)) {
                return len;
            }
        }
        0
    }
}

/// The process's current [`Redactor`], replaced as a whole when the secret set changes.
#[derive(Clone, Default)]
pub struct SharedRedactor {
    current: Arc<RwLock<Arc<Redactor>>>,
}

impl SharedRedactor {
    /// A snapshot of the current redactor.
    pub fn get(&self) -> Arc<Redactor> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the current redactor.
    pub fn set(&self, redactor: Redactor) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(redactor);
    }

    /// `text` redacted with the current redactor.
    pub fn apply(&self, text: &str) -> String {
        self.get().apply(text)
    }
}

impl std::fmt::Debug for SharedRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// A value and the credential of a `Scheme credential` value, each in its common encodings.
fn forms(value: &str) -> Vec<String> {
    let value = value.trim();
    let mut plain = vec![value.to_owned()];
    if let Some((_, credential)) = value.rsplit_once(' ') {
        plain.push(credential.to_owned());
    }
    let mut all = Vec::new();
    for text in &plain {
        all.push(text.clone());
        let json = serde_json::to_string(text).unwrap_or_default();
        all.push(json.trim_matches('"').to_owned());
        for percent in [percent_encode(text, b"-._~"), percent_encode(text, b"")] {
            all.push(percent.to_ascii_lowercase_hex());
            all.push(percent);
        }
        let hex = hex::encode(text.as_bytes());
        all.push(hex.to_ascii_uppercase());
        all.push(hex);
        all.extend(base64_cores(text.as_bytes()));
    }
    all
}

/// The part of base64 (and base64url) text that encodes `bytes` whatever its offset in the encoded
/// input: for each of the three alignments, the characters whose six bits all come from `bytes`.
fn base64_cores(bytes: &[u8]) -> Vec<String> {
    let mut cores = Vec::new();
    for offset in 0..3usize {
        let mut input = vec![0u8; offset];
        input.extend_from_slice(bytes);
        let encoded = STANDARD_NO_PAD.encode(&input);
        let first = (8 * offset).div_ceil(6);
        let end = (8 * input.len()) / 6;
        if end <= first {
            continue;
        }
        let core = &encoded[first..end];
        cores.push(core.to_owned());
        let url = URL_SAFE_NO_PAD.encode(&input);
        cores.push(url[first..end].to_owned());
    }
    cores
}

/// Percent-encoding (upper-case hex) of every byte but ASCII letters, digits and `keep`: RFC 3986 keeps
/// its unreserved `-._~`, stricter encoders escape them too.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Lower-casing only the hex digits of `%XX` escapes.
trait LowerHex {
    fn to_ascii_lowercase_hex(&self) -> String;
}

impl LowerHex for String {
    fn to_ascii_lowercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut escape = 0;
        for c in self.chars() {
            if c == '%' {
                escape = 2;
                out.push(c);
            } else if escape > 0 {
                escape -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    use super::*;

    const SECRET: &str = "sk-live/Secret+Value?42";

    fn assert_clean(redactor: &Redactor, text: &str) {
        let redacted = redactor.apply(text);
        assert!(redacted.contains(REDACTED), "nothing redacted in {text}");
        for form in [SECRET.to_owned(), hex::encode(SECRET), STANDARD.encode(SECRET)] {
            assert!(!redacted.contains(&form), "{form} survived in {redacted}");
        }
    }

    #[test]
    fn plain_and_encoded_forms_are_replaced() {
        let redactor = Redactor::new([SECRET, "1"]);
        assert_clean(&redactor, &format!("key {SECRET} seen"));
        assert_clean(&redactor, &format!("hex {}", hex::encode(SECRET)));
        assert_clean(&redactor, &format!("HEX {}", hex::encode_upper(SECRET)));
        assert_clean(&redactor, &format!("b64 {}", STANDARD.encode(SECRET)));
        assert_clean(&redactor, &format!("b64url {}", URL_SAFE.encode(SECRET)));
        assert_clean(&redactor, &format!("url {}", percent_encode(SECRET, b"-._~")));
        assert_clean(&redactor, &format!("url {}", percent_encode(SECRET, b"").to_ascii_lowercase_hex()));
        assert_clean(&redactor, &serde_json::to_string(&format!("json \"{SECRET}\"")).unwrap());
        assert_eq!(redactor.apply("version 1 of 1"), "version 1 of 1", "short values are not secrets");
    }

    #[test]
    fn base64_inside_a_longer_encoding_is_found_at_every_alignment() {
        let redactor = Redactor::new([SECRET]);
        for prefix in ["", "u:", "us:", "use:", "Bearer "] {
            let encoded = STANDARD.encode(format!("{prefix}{SECRET} and more"));
            let redacted = redactor.apply(&encoded);
            assert!(redacted.contains(REDACTED), "{prefix:?}: {encoded}");
            let url = URL_SAFE.encode(format!("{prefix}{SECRET}"));
            assert!(redactor.apply(&url).contains(REDACTED), "{prefix:?}: {url}");
        }
    }

    #[test]
    fn scheme_credentials_and_json_values_are_replaced() {
        let redactor = Redactor::new(["Bearer tok-123456"]);
        assert_eq!(redactor.apply("got tok-123456"), format!("got {REDACTED}"));
        assert_eq!(redactor.apply("got Bearer tok-123456"), format!("got {REDACTED}"), "longest form wins");
        let value = serde_json::json!({"a": ["x tok-123456"], "tok-123456": 1, "n": 2});
        let redacted = redactor.apply_json(&value);
        assert_eq!(redacted, serde_json::json!({"a": [format!("x {REDACTED}")], REDACTED: 1, "n": 2}));
    }

    #[test]
    fn a_secret_split_across_stream_pieces_never_passes() {
        let redactor = Redactor::new([SECRET]);
        let text = format!("before {SECRET} middle {} after", STANDARD.encode(SECRET));
        for size in [1, 2, 3, 5, 7, 64] {
            let mut stream = redactor.stream();
            let mut out = String::new();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(size) {
                let piece: String = piece.iter().collect();
                let emitted = stream.push(&piece);
                assert!(!emitted.contains("sk-live"), "size {size}: {emitted}");
                out.push_str(&emitted);
            }
            out.push_str(&stream.finish());
            assert_eq!(out, redactor.apply(&text), "size {size}");
            assert!(!out.contains(SECRET) && out.starts_with("before ") && out.ends_with(" after"), "{out}");
        }
        let mut empty = Redactor::default().stream();
        assert_eq!(empty.push("abc"), "abc");
    }

    #[test]
    fn shared_redactor_swaps_whole_sets() {
        let shared = SharedRedactor::default();
        assert_eq!(shared.apply("k-old-1234"), "k-old-1234");
        shared.set(Redactor::new(["k-old-1234"]));
        assert_eq!(shared.apply("k-old-1234"), REDACTED);
        shared.set(Redactor::new(["k-new-5678"]));
        assert_eq!(shared.apply("k-old-1234 k-new-5678"), format!("k-old-1234 {REDACTED}"));
    }
}
