//! A server-sent events reader: bytes in, `data` payloads out.
//!
//! Follows the SSE framing rules the upstream relies on: events are separated by a
//! blank line, `data:` lines of one event are joined with `\n`, lines starting with
//! `:` are comments (OpenRouter's `: OPENROUTER PROCESSING` keep-alives), and both
//! `\n` and `\r\n` end a line. Network reads can split anywhere, even inside a
//! UTF-8 sequence, so bytes are buffered until a full line is there.

/// What one complete line contributed.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// The `data` of a finished event.
    Data(String),
    /// A comment line: the connection is alive, nothing else.
    Comment,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes and returns the items completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Item> {
        self.buffer.extend_from_slice(bytes);
        let mut items = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            self.line(&line, &mut items);
        }
        items
    }

    /// Ends the input: an event not yet closed by a blank line is still delivered
    /// (some servers end the body right after the last `data:` line).
    pub fn finish(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            let line = String::from_utf8_lossy(&rest).trim_end_matches('\r').to_owned();
            self.line(&line, &mut items);
        }
        if let Some(data) = self.data.take() {
            items.push(Item::Data(data));
        }
        items
    }

    fn line(&mut self, line: &str, items: &mut Vec<Item>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                items.push(Item::Data(data));
            }
            return;
        }
        if line.starts_with(':') {
            items.push(Item::Comment);
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // `event`, `id` and `retry` carry nothing the upstream uses.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_comments_and_split_reads() {
        let input = b": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata: [DONE]\n\n";
        // Every way of splitting the input gives the same result.
        for split in 0..input.len() {
            let mut parser = SseParser::default();
            let mut items = parser.feed(&input[..split]);
            items.extend(parser.feed(&input[split..]));
            items.extend(parser.finish());
            assert_eq!(
                items,
                vec![
                    Item::Comment,
                    Item::Data("{\"a\":1}".into()),
                    Item::Data("{\"b\":\n2}".into()),
                    Item::Data("[DONE]".into()),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn utf8_split_across_reads_survives() {
        let text = "data: {\"t\":\"héllo ✓\"}\n\n".as_bytes();
        let cut = text.iter().position(|&b| b == 0xc3).map(|i| i + 1).unwrap_or(10);
        let mut parser = SseParser::default();
        let mut items = parser.feed(&text[..cut]);
        items.extend(parser.feed(&text[cut..]));
        assert_eq!(items, vec![Item::Data("{\"t\":\"héllo ✓\"}".into())]);
    }

    #[test]
    fn an_unterminated_last_event_is_delivered_on_finish() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: {\"x\":1}").is_empty());
        assert_eq!(parser.finish(), vec![Item::Data("{\"x\":1}".into())]);
    }
}
