//! The one pagination shape (SPEC §2.3): newest first by time-ordered id, opaque cursor.

use base64::Engine as _;
use uuid::Uuid;

/// One page of results and the cursor for the next, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only proves there is more.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> Uuid) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| Cursor(key(last)))
        } else {
            None
        };
        Self { items, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}

/// Position after the last item of a page (items older than this id come next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub Uuid);

impl Cursor {
    pub fn encode(self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Parses a cursor produced by [`Cursor::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        Uuid::from_slice(&bytes).ok().map(Self)
    }
}
