//! Pure text functions: splitting agent output to a platform's length limit, and rendering it for
//! Telegram's HTML parse mode.
//!
//! Splitting works on the Markdown text before rendering, so a cut can never land inside an HTML
//! entity, and it counts UTF-16 code units (what Telegram counts; never fewer than characters), so
//! every part fits whichever way a platform counts. It prefers paragraph, then line, then sentence,
//! then word boundaries, cuts only between characters, and keeps code fences balanced: a part that
//! ends inside a fenced block closes it, and the next part reopens it with the same info string.

/// Length as platforms count it (UTF-16 code units).
pub fn units(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

const FENCE: &str = "```";
/// Room kept at the end of a part for closing a fence that is still open there (`"\n```"`).
const CLOSE_RESERVE: usize = 4;
/// Below this a limit leaves no room for fences and text; callers pass platform limits (≥ 2000).
const MIN_LIMIT: usize = 64;

/// Splits `text` into parts of at most `max_units` UTF-16 code units each (see the module docs).
/// Blank text yields no parts.
pub fn split(text: &str, max_units: usize) -> Vec<String> {
    let max_units = max_units.max(MIN_LIMIT);
    let mut parts = Vec::new();
    let mut rest = text.trim_end();
    let mut open_fence: Option<String> = None;
    while !rest.trim().is_empty() {
        let prefix = open_fence.as_ref().map(|fence| format!("{fence}\n")).unwrap_or_default();
        if units(&prefix) + units(rest) <= max_units {
            parts.push(format!("{prefix}{rest}"));
            break;
        }
        let budget = max_units - units(&prefix) - CLOSE_RESERVE;
        let window_end = prefix_within(rest, budget);
        let (cut, skip) = best_cut(&rest[..window_end]);
        let body = rest[..cut].trim_end();
        open_fence = fence_after(open_fence, body);
        let mut part = format!("{prefix}{body}");
        if open_fence.is_some() {
            part.push('\n');
            part.push_str(FENCE);
        }
        if !body.trim().is_empty() {
            parts.push(part);
        }
        rest = &rest[cut + skip..];
        rest = rest.trim_start_matches('\n');
    }
    parts
}

/// Byte length of the longest prefix of `text` within `budget` units (always at least one character,
/// so splitting makes progress).
fn prefix_within(text: &str, budget: usize) -> usize {
    let mut used = 0;
    for (index, ch) in text.char_indices() {
        used += ch.len_utf16();
        if used > budget {
            return if index == 0 { ch.len_utf8() } else { index };
        }
    }
    text.len()
}

/// Where to cut `window` (byte index) and how many separator bytes after the cut to drop. Prefers the
/// last paragraph break, then line break, sentence end, whitespace, in the window's second half; else
/// cuts at the window's end.
fn best_cut(window: &str) -> (usize, usize) {
    let floor = window.len() / 2;
    if let Some(at) = window.rfind("\n\n").filter(|&at| at >= floor) {
        return (at, 2);
    }
    if let Some(at) = window.rfind('\n').filter(|&at| at >= floor) {
        return (at, 1);
    }
    let sentence = [". ", "! ", "? "].iter().filter_map(|end| window.rfind(end)).max();
    if let Some(at) = sentence.filter(|&at| at >= floor) {
        return (at + 1, 1);
    }
    if let Some((at, ch)) =
        window.char_indices().rev().find(|(_, ch)| ch.is_whitespace()).filter(|(at, _)| *at >= floor)
    {
        return (at, ch.len_utf8());
    }
    (window.len(), 0)
}

/// The fence still open after `body`, given the one open before it.
fn fence_after(mut open: Option<String>, body: &str) -> Option<String> {
    for line in body.lines() {
        let line = line.trim_start();
        if line.starts_with(FENCE) {
            open = match open {
                Some(_) => None,
                None => Some(line.trim_end().to_owned()),
            };
        }
    }
    open
}

/// Escapes the three characters Telegram's HTML mode (and Slack's mrkdwn) give meaning to.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
    out
}

/// Renders agent Markdown for Telegram's HTML parse mode: fenced blocks become `<pre><code>`, inline
/// code `<code>`, `**bold**` `<b>`; everything else is escaped text. Unbalanced markers stay literal.
pub fn telegram_html(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + 32);
    let mut in_fence = false;
    let mut first_in_fence = false;
    for (index, line) in markdown.split('\n').enumerate() {
        let fence_line = line.trim_start().starts_with(FENCE);
        if fence_line && !in_fence {
            if index > 0 {
                out.push('\n');
            }
            let language = line.trim_start()[FENCE.len()..].trim();
            if language.is_empty() || !language.chars().all(|ch| ch.is_ascii_alphanumeric() || "+-#_.".contains(ch)) {
                out.push_str("<pre><code>");
            } else {
                out.push_str(&format!("<pre><code class=\"language-{language}\">"));
            }
            in_fence = true;
            first_in_fence = true;
            continue;
        }
        if fence_line && in_fence {
            out.push_str("</code></pre>");
            in_fence = false;
            continue;
        }
        if in_fence {
            // The first line of a block follows its opening tag directly.
            if !first_in_fence {
                out.push('\n');
            }
            first_in_fence = false;
            out.push_str(&escape_html(line));
        } else {
            if index > 0 {
                out.push('\n');
            }
            out.push_str(&inline_html(line));
        }
    }
    if in_fence {
        out.push_str("</code></pre>");
    }
    out
}

/// Inline code and bold within one line.
fn inline_html(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while !rest.is_empty() {
        let code = rest.find('`');
        let bold = rest.find("**");
        let (start, marker, tag) = match (code, bold) {
            (Some(c), Some(b)) if b < c => (b, "**", "b"),
            (Some(c), _) => (c, "`", "code"),
            (None, Some(b)) => (b, "**", "b"),
            (None, None) => break,
        };
        let after = &rest[start + marker.len()..];
        match after.find(marker).filter(|&end| end > 0) {
            Some(end) => {
                out.push_str(&escape_html(&rest[..start]));
                out.push_str(&format!("<{tag}>{}</{tag}>", escape_html(&after[..end])));
                rest = &after[end + marker.len()..];
            }
            None => {
                out.push_str(&escape_html(&rest[..start + marker.len()]));
                rest = after;
            }
        }
    }
    out.push_str(&escape_html(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(parts: &[String], max: usize) {
        for part in parts {
            assert!(units(part) <= max, "part of {} units > {max}: {part:?}", units(part));
            assert_eq!(part.matches(FENCE).count() % 2, 0, "unbalanced fences in {part:?}");
        }
    }

    #[test]
    fn short_text_is_one_part_and_blank_text_none() {
        assert_eq!(split("hello", 100), ["hello"]);
        assert!(split("  \n ", 100).is_empty());
    }

    #[test]
    fn prefers_paragraphs_then_lines_then_sentences_then_words() {
        let para = format!("{}\n\n{}", "a".repeat(60), "b".repeat(30));
        assert_eq!(split(&para, 80), ["a".repeat(60), "b".repeat(30)]);

        let lines = format!("{}\n{}", "a".repeat(60), "b".repeat(30));
        assert_eq!(split(&lines, 80), ["a".repeat(60), "b".repeat(30)]);

        let sentences = format!("{}. {}", "a".repeat(60), "b".repeat(30));
        assert_eq!(split(&sentences, 80), [format!("{}.", "a".repeat(60)), "b".repeat(30)]);

        let words = format!("{} {}", "a".repeat(60), "b".repeat(30));
        assert_eq!(split(&words, 80), ["a".repeat(60), "b".repeat(30)]);
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_between_characters() {
        let text = "ä€😀".repeat(100);
        let parts = split(&text, 64);
        check(&parts, 64);
        assert_eq!(parts.concat(), text, "nothing lost, nothing broken");
    }

    #[test]
    fn code_fences_stay_balanced_across_parts() {
        let code: String = (0..40).map(|n| format!("let x{n} = {n};\n")).collect();
        let text = format!("Here:\n\n```rust\n{code}```\n\nDone.");
        let parts = split(&text, 120);
        check(&parts, 120);
        assert!(parts.len() > 3);
        for part in &parts[1..parts.len() - 1] {
            assert!(part.starts_with("```rust\n"), "{part:?}");
            assert!(part.ends_with("\n```"), "{part:?}");
        }
        let joined: String = parts.join("\n");
        for n in 0..40 {
            assert!(joined.contains(&format!("let x{n} = {n};")));
        }
        assert!(parts.last().unwrap().ends_with("Done."));
    }

    #[test]
    fn every_part_fits_a_long_mixed_reply() {
        let text =
            (0..300).map(|n| format!("Sentence {n} is here. ")).collect::<String>() + "\n\n" + &"word ".repeat(900);
        let parts = split(&text, 4096);
        check(&parts, 4096);
        assert!(parts.len() >= 2);
    }

    #[test]
    fn html_escapes_text_and_renders_code_and_bold() {
        assert_eq!(escape_html("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
        assert_eq!(telegram_html("**Note**: use `x<y` & <b>"), "<b>Note</b>: use <code>x&lt;y</code> &amp; &lt;b&gt;");
        assert_eq!(
            telegram_html("Run:\n```sh\necho <hi>\nls\n```\nok"),
            "Run:\n<pre><code class=\"language-sh\">echo &lt;hi&gt;\nls</code></pre>\nok"
        );
        assert_eq!(telegram_html("a ` lone and ** lone"), "a ` lone and ** lone");
        assert_eq!(telegram_html("```\n<open"), "<pre><code>&lt;open</code></pre>");
    }
}
