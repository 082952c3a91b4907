//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules) fed with raw bytes.
//!
//! Bytes arrive in arbitrary TCP chunks: a chunk may end inside a line, between `\r` and `\n`, or inside a
//! multi-byte UTF-8 character. The parser only ever decodes complete lines, and line terminators are ASCII,
//! so a split character is simply completed by the next chunk.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field; empty when the server sent none (the spec's default type "message").
    pub event: String,
    /// All `data:` lines of the event joined with `\n`.
    pub data: String,
}

/// A line that is not valid UTF-8 cannot be JSON either; the stream is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

/// Parser state between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`, so a leading `\n` in the next one belongs to the same terminator.
    after_cr: bool,
    /// Nothing has been parsed yet, so a leading byte-order mark is skipped.
    at_start: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub(crate) fn new() -> Self {
        Self { at_start: true, ..Self::default() }
    }

    /// Consumes a chunk and returns the events it completed, in order.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, InvalidUtf8> {
        let mut events = Vec::new();
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|byte| *byte == b'\n' || *byte == b'\r') {
            self.line.extend_from_slice(&chunk[..end]);
            let terminator = chunk[end];
            chunk = &chunk[end + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line)? {
                events.push(event);
            }
        }
        self.line.extend_from_slice(chunk);
        Ok(events)
    }

    /// Called at end of stream. A last event whose lines were all terminated but which lacks the closing
    /// blank line is still dispatched (lenient towards servers that end with `data: [DONE]\n`); an
    /// unterminated line is a cut-off fragment and is dropped.
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        self.line.clear();
        self.dispatch()
    }

    fn process_line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, InvalidUtf8> {
        let mut line = std::str::from_utf8(line).map_err(|_| InvalidUtf8)?;
        if std::mem::take(&mut self.at_start) {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` only matter for reconnecting EventSource clients, which a model call never is.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        std::mem::take(&mut self.has_data).then_some(SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.feed(chunk).unwrap());
        }
        events.extend(parser.finish());
        events
    }

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into() }
    }

    #[test]
    fn fields_comments_and_multiline_data() {
        let text = b": keep-alive\nevent: delta\ndata: first\ndata:second\nid: 7\nretry: 10\n\ndata: {\"a\":1}\n\n";
        assert_eq!(parse_all(&[text]), vec![event("delta", "first\nsecond"), event("", r#"{"a":1}"#)]);
    }

    #[test]
    fn crlf_cr_and_lf_all_terminate_lines() {
        let expected = vec![event("x", "1"), event("", "2")];
        assert_eq!(parse_all(&[b"event: x\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"]), expected);
        assert_eq!(parse_all(&[b"event: x\rdata: 1\r\rdata: 2\r\r"]), expected);
        assert_eq!(parse_all(&[b"event: x\ndata: 1\n\ndata: 2\n\n"]), expected);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let text = concat!(
            "\u{feff}event: message_start\r\ndata: {\"t\":\"héllo → 世界 🦀\"}\r\n\r\n",
            ": ping\r\ndata: a\r\ndata: b\r\n\r\n"
        )
        .as_bytes();
        let whole = parse_all(&[text]);
        assert_eq!(whole, vec![event("message_start", "{\"t\":\"héllo → 世界 🦀\"}"), event("", "a\nb")]);
        for first in 0..=text.len() {
            assert_eq!(parse_all(&[&text[..first], &text[first..]]), whole, "split at {first}");
            for second in first..=text.len() {
                let pieces = [&text[..first], &text[first..second], &text[second..]];
                assert_eq!(parse_all(&pieces), whole, "split at {first}/{second}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let text = "data: ü\n\n".as_bytes();
        let pieces: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&pieces), vec![event("", "ü")]);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert_eq!(parse_all(&[b"event: ping\n\n: comment\n\n"]), vec![]);
    }

    #[test]
    fn end_of_stream_keeps_terminated_lines_and_drops_fragments() {
        assert_eq!(parse_all(&[b"data: [DONE]\n"]), vec![event("", "[DONE]")]);
        assert_eq!(parse_all(&[b"data: {\"partial"]), vec![]);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut parser = SseParser::new();
        assert_eq!(parser.feed(b"data: \xff\xfe\n"), Err(InvalidUtf8));
    }

    #[test]
    fn field_without_colon_and_value_without_space() {
        assert_eq!(parse_all(&[b"data\n\ndata:x\n\n"]), vec![event("", ""), event("", "x")]);
    }
}
