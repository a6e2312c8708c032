//! A streamed chat completion, read chunk by chunk.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::sse::{Item, SseParser};
use crate::transport::BodyStream;
use crate::types::ChatChunk;
use crate::{TimeoutKind, UpstreamError};

/// One step of a stream.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    Chunk(Box<ChatChunk>),
    /// `data: [DONE]`: the upstream says it is finished.
    Done,
}

/// The body of a streaming chat completion. Dropping it closes the connection,
/// which is how a request is cancelled upstream.
pub struct ChatStream {
    body: BodyStream,
    parser: SseParser,
    pending: VecDeque<Item>,
    idle: Duration,
    deadline: Instant,
    ended: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    pub(crate) fn new(body: BodyStream, idle: Duration, deadline: Instant) -> Self {
        ChatStream {
            body,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            idle,
            deadline,
            ended: false,
        }
    }

    /// The next chunk, `Done`, or an error. `None` when the body ended; that may
    /// happen without `[DONE]`, and callers decide from what they saw whether
    /// the answer was complete. Keep-alive comments are skipped, but they do
    /// count as a sign of life for the idle limit.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, UpstreamError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                match item {
                    Item::Comment => continue,
                    Item::Data(data) => return Some(self.event(&data)),
                }
            }
            if self.ended {
                return None;
            }
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let (limit, kind) = if self.idle < remaining {
                (self.idle, TimeoutKind::Idle)
            } else {
                (remaining, TimeoutKind::Total)
            };
            match tokio::time::timeout(limit, self.body.next()).await {
                Err(_) => {
                    self.ended = true;
                    return Some(Err(UpstreamError::Timeout(kind)));
                }
                Ok(None) => {
                    self.ended = true;
                    self.pending.extend(self.parser.finish());
                }
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Some(Err(UpstreamError::Unreachable(format!(
                        "stream interrupted: {e}"
                    ))));
                }
                Ok(Some(Ok(bytes))) => self.pending.extend(self.parser.feed(&bytes)),
            }
        }
    }

    fn event(&mut self, data: &str) -> Result<StreamEvent, UpstreamError> {
        if data.trim() == "[DONE]" {
            self.ended = true;
            self.pending.clear();
            return Ok(StreamEvent::Done);
        }
        let mut chunk: ChatChunk = serde_json::from_str(data)
            .map_err(|e| UpstreamError::InvalidResponse(format!("bad stream chunk: {e}")))?;
        chunk.raw = data.to_owned();
        if let Some(error) = chunk.error {
            // Nothing useful follows a mid-stream error, with or without [DONE].
            self.ended = true;
            self.pending.clear();
            return Err(UpstreamError::MidStream {
                code: error.code,
                message: error.message,
            });
        }
        Ok(StreamEvent::Chunk(Box::new(chunk)))
    }
}
