//! Stateless chat for the OpenAI-compatible `/v1`: the request body goes upstream
//! as given (every parameter the client set; [`ChatBody`]), the answer comes back as the
//! upstream wrote it, chunk by chunk when streaming. Routing, usage records and
//! cancellation work as for the studio's chat; nothing is stored but the usage.

use std::time::Instant;

use atelier_openrouter::{Client, StreamEvent, UpstreamError, Usage};
use atelier_store::{GenerationKind, GenerationRecord, GenerationStatus, Role, usd_to_nanos};
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Routing;
use super::chat_body::{BodyError, ChatBody};
use super::generation_error::GenerationError;
use super::routing::Action;
use super::usage::UsageRecorder;

/// What a streaming client receives.
#[derive(Debug)]
pub enum PassEvent {
    /// One upstream chunk, its JSON unchanged.
    Chunk(String),
    /// The stream failed after it had started. Boxed: the channel's blocks hold 32
    /// events each, allocated per stream, and an unboxed error would make every
    /// slot as large as the error (ADR-0021).
    Failed(Box<GenerationError>),
}

#[derive(Clone)]
pub struct Passthrough {
    client: Client,
    routing: Routing,
    usage: UsageRecorder,
    tracker: TaskTracker,
}

/// Who asked for what, for the usage record.
struct Call {
    id: Uuid,
    user_id: Uuid,
    requested: String,
    summary: String,
    started: Instant,
}

impl Passthrough {
    pub fn new(client: Client, routing: Routing, usage: UsageRecorder, tracker: TaskTracker) -> Self {
        Passthrough {
            client,
            routing,
            usage,
            tracker,
        }
    }

    fn call(user_id: Uuid, body: &ChatBody) -> Result<Call, GenerationError> {
        let invalid = |e: BodyError| GenerationError::Invalid(e.to_string());
        let requested = body.model().map_err(invalid)?;
        let summary = body.summary().map_err(invalid)?;
        Ok(Call {
            id: Uuid::now_v7(),
            user_id,
            requested,
            summary,
            started: Instant::now(),
        })
    }

    /// Tries the plan for `call`, with the body's `model` set to each model in
    /// turn; a failure of them all is recorded before it is returned.
    async fn routed<T, F, Fut>(
        &self,
        call: &Call,
        role: Role,
        body: &ChatBody,
        stream: bool,
        send: F,
    ) -> Result<(T, String), GenerationError>
    where
        F: Fn(Bytes) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let plan = self.routing.plan(&call.requested, Action::Chat, role)?;
        let result = self
            .routing
            .router
            .run(&plan, |model| {
                let sent = send(body.to_upstream(&model, stream));
                async move { sent.await.map_err(GenerationError::from) }
            })
            .await;
        if let Err(e) = &result {
            let error = Some(e.to_string());
            self.record(call, GenerationStatus::Failed, None, None, 0, error)
                .await;
        }
        result
    }

    /// A whole answer: the upstream's bytes, unchanged, and the model that
    /// served it.
    pub async fn chat(
        &self,
        user_id: Uuid,
        role: Role,
        body: &ChatBody,
    ) -> Result<(Bytes, String), GenerationError> {
        let call = Self::call(user_id, body)?;
        let client = &self.client;
        let (answer, tried) = self
            .routed(&call, role, body, false, |body| client.chat_raw(body))
            .await?;
        let served = answer.model.filter(|m| !m.is_empty()).unwrap_or(tried);
        let status = GenerationStatus::Succeeded;
        self.record(
            &call,
            status,
            Some(served.clone()),
            answer.usage.as_ref(),
            0,
            None,
        )
        .await;
        Ok((answer.bytes, served))
    }

    /// Starts a streamed answer; `hold` is kept until it ends. Returns the model
    /// that serves it and the chunks to relay.
    pub async fn chat_stream<H: Send + 'static>(
        &self,
        user_id: Uuid,
        role: Role,
        body: &ChatBody,
        hold: H,
    ) -> Result<(String, mpsc::Receiver<PassEvent>), GenerationError> {
        let call = Self::call(user_id, body)?;
        let client = &self.client;
        let (mut upstream, served) = self
            .routed(&call, role, body, true, |body| client.chat_stream_raw(body))
            .await?;
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        let model = served.clone();
        self.tracker.spawn(async move {
            let (mut usage, mut chunks, mut finished) = (None, 0u64, false);
            let ending: Result<(), Option<UpstreamError>> = loop {
                tokio::select! {
                    () = tx.closed() => break Err(None),
                    event = upstream.next() => match event {
                        Some(Ok(StreamEvent::Done)) => break Ok(()),
                        None if finished || usage.is_some() => break Ok(()),
                        None => break Err(Some(UpstreamError::InvalidResponse("the stream ended early".into()))),
                        Some(Err(e)) => break Err(Some(e)),
                        Some(Ok(StreamEvent::Chunk(chunk))) => {
                            finished |= chunk.finish_reason().is_some();
                            if chunk.usage.is_some() {
                                usage = chunk.usage.clone();
                            }
                            if !chunk.content().is_empty() {
                                chunks += 1;
                            }
                            if tx.send(PassEvent::Chunk(chunk.raw)).await.is_err() {
                                break Err(None);
                            }
                        }
                    },
                }
            };
            // Dropping the stream closes the upstream connection: the cancellation.
            drop(upstream);
            let (status, error) = match &ending {
                Ok(()) => (GenerationStatus::Succeeded, None),
                Err(None) => (GenerationStatus::Aborted, None),
                Err(Some(e)) => (GenerationStatus::Failed, Some(e.to_string())),
            };
            this.record(&call, status, Some(model), usage.as_ref(), chunks, error).await;
            if let Err(Some(e)) = ending {
                let _ = tx.send(PassEvent::Failed(Box::new(e.into()))).await;
            }
            drop(hold);
        });
        Ok((served, rx))
    }

    async fn record(
        &self,
        call: &Call,
        status: GenerationStatus,
        served: Option<String>,
        usage: Option<&Usage>,
        streamed_chunks: u64,
        error: Option<String>,
    ) {
        self.usage
            .record(GenerationRecord {
                id: call.id,
                user_id: call.user_id,
                kind: GenerationKind::Chat,
                model_requested: call.requested.clone(),
                model_served: served,
                status,
                prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
                completion_tokens: usage.map_or(streamed_chunks, |u| u.completion_tokens),
                cost_nanousd: usage.and_then(|u| u.cost).map_or(0, usd_to_nanos),
                latency_ms: u64::try_from(call.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                error,
                summary: call.summary.clone(),
                conversation_id: None,
                media_ids: Vec::new(),
                created_at: Utc::now(),
            })
            .await;
    }
}
