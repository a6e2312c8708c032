//! Multi-turn chat with stored conversations, answered whole or streamed.
//!
//! The user's new messages are stored while the upstream is asked, and nothing of
//! the answer goes out or is stored before they are: they are kept whatever
//! happens next, and their commit (an fsync, milliseconds) does not delay the
//! answer's first byte. The answer is stored when it ends: `complete`,
//! `failed` (with what arrived before the failure) or `aborted` (the client went
//! away; the upstream request is dropped at once, which cancels it). Every
//! outcome is a usage record.

use std::sync::Arc;
use std::time::Instant;

use atelier_openrouter::{
    ChatRequest, ChatResponse, ChatStream, Client, Message, StreamEvent, UpstreamError, Usage,
};
use atelier_store::{
    ChatMessage, Conversation, ConversationQuery, GenerationKind, GenerationRecord, GenerationStatus,
    MessageStatus, Role, Store, usd_to_nanos,
};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Routing;
use super::generation_error::GenerationError;
use super::routing::{Action, Plan};
use super::usage::UsageRecorder;

const MAX_MESSAGES: usize = 500;
const MAX_CONTENT_CHARS: usize = 200_000;
const MAX_TITLE_CHARS: usize = 200;

/// A message as the client sends it.
#[derive(Debug, Clone)]
pub struct InputMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatInput {
    pub model: String,
    /// With a conversation: the new messages (usually one). Without: the whole
    /// context of a new conversation.
    pub messages: Vec<InputMessage>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub conversation_id: Option<Uuid>,
}

/// Tokens and cost of one answer.
#[derive(Debug, Clone, Default)]
pub struct UsageSummary {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: Option<f64>,
}

impl From<&Usage> for UsageSummary {
    fn from(u: &Usage) -> Self {
        UsageSummary {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost,
        }
    }
}

impl UsageSummary {
    /// What an answer cost (nothing known is zero).
    pub fn of(usage: Option<&Usage>) -> Self {
        usage.map(UsageSummary::from).unwrap_or_default()
    }
}

/// The model that served an answer (its own name for itself, or the one asked
/// for when it gives none) and what the answer cost.
pub(super) fn served_and_usage(response: &ChatResponse, tried: String) -> (String, UsageSummary) {
    let served = Some(response.model.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or(tried);
    (served, UsageSummary::of(response.usage.as_ref()))
}

/// A whole answer.
#[derive(Debug)]
pub struct ChatReply {
    pub conversation_id: Uuid,
    pub message: ChatMessage,
    /// The model that served it.
    pub model: String,
    pub usage: UsageSummary,
}

/// What a streaming client receives after the start. The last two are boxed so
/// that an event is as small as a delta: the channel allocates its slots 32 at a
/// time for every open stream (ADR-0021).
#[derive(Debug)]
pub enum ChatEvent {
    Delta(String),
    Done(Box<ChatDone>),
    Failed {
        message_id: Uuid,
        error: Box<GenerationError>,
    },
}

/// The end of a streamed answer: the stored message and what it cost.
#[derive(Debug)]
pub struct ChatDone {
    pub message: ChatMessage,
    pub model: String,
    pub finish_reason: Option<String>,
    pub usage: UsageSummary,
}

/// A started stream.
pub struct ChatStreamStart {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub events: mpsc::Receiver<ChatEvent>,
}

#[derive(Clone)]
pub struct ChatService {
    client: Client,
    store: Arc<dyn Store>,
    routing: Routing,
    usage: UsageRecorder,
    tracker: TaskTracker,
}

/// A request ready to send, its conversation stored.
struct Prepared {
    user_id: Uuid,
    conversation: Conversation,
    /// The request as asked: `model` is what the user named (model or alias).
    request: ChatRequest,
    plan: Plan,
    summary: String,
    started: Instant,
}

impl Prepared {
    fn for_model(&self, model: String) -> ChatRequest {
        ChatRequest {
            model,
            ..self.request.clone()
        }
    }
}

impl ChatService {
    pub fn new(
        client: Client,
        store: Arc<dyn Store>,
        routing: Routing,
        usage: UsageRecorder,
        tracker: TaskTracker,
    ) -> Self {
        ChatService {
            client,
            store,
            routing,
            usage,
            tracker,
        }
    }

    pub async fn complete(
        &self,
        user_id: Uuid,
        role: Role,
        input: ChatInput,
    ) -> Result<ChatReply, GenerationError> {
        let (prepared, question) = self.prepare(user_id, role, input).await?;
        let attempt = self.routing.router.run(&prepared.plan, |model| {
            let request = prepared.for_model(model);
            async move { self.client.chat(&request).await.map_err(GenerationError::from) }
        });
        let attempt = while_storing(self.store_question(&prepared, question), attempt).await?;
        match attempt {
            Ok((response, tried)) => {
                let (served, usage) = served_and_usage(&response, tried);
                let message = self
                    .finish(
                        &prepared,
                        response.text(),
                        MessageStatus::Complete,
                        Some(served.clone()),
                        None,
                        &usage,
                    )
                    .await?;
                Ok(ChatReply {
                    conversation_id: prepared.conversation.id,
                    message,
                    model: served,
                    usage,
                })
            }
            Err(e) => Err(self.failed(&prepared, e).await?),
        }
    }

    /// Starts a streamed answer. Errors before the upstream starts answering are
    /// returned (and can become an HTTP status); later ones arrive as events.
    /// `hold` (a budget reservation) is kept until the answer has ended.
    pub async fn stream<H: Send + 'static>(
        &self,
        user_id: Uuid,
        role: Role,
        input: ChatInput,
        hold: H,
    ) -> Result<ChatStreamStart, GenerationError> {
        let (prepared, question) = self.prepare(user_id, role, input).await?;
        // Another model can still be tried until the first byte has arrived.
        let attempt = self.routing.router.run(&prepared.plan, |model| {
            let request = prepared.for_model(model);
            async move {
                self.client
                    .chat_stream(&request)
                    .await
                    .map_err(GenerationError::from)
            }
        });
        let attempt = while_storing(self.store_question(&prepared, question), attempt).await?;
        let upstream = match attempt {
            Ok((stream, _)) => stream,
            Err(e) => return Err(self.failed(&prepared, e).await?),
        };
        let (tx, rx) = mpsc::channel(64);
        let message_id = Uuid::now_v7();
        let conversation_id = prepared.conversation.id;
        let service = self.clone();
        self.tracker.spawn(async move {
            service.relay(prepared, message_id, upstream, tx).await;
            drop(hold);
        });
        Ok(ChatStreamStart {
            conversation_id,
            message_id,
            events: rx,
        })
    }

    async fn relay(
        &self,
        prepared: Prepared,
        message_id: Uuid,
        mut upstream: ChatStream,
        tx: mpsc::Sender<ChatEvent>,
    ) {
        let mut text = String::new();
        let (mut finish_reason, mut usage, mut served) = (None, None, None);
        let mut deltas = 0u64;
        let ending: Result<(), Option<UpstreamError>> = loop {
            tokio::select! {
                () = tx.closed() => break Err(None),
                event = upstream.next() => match event {
                    Some(Ok(StreamEvent::Done)) => break Ok(()),
                    // Without [DONE], a finish reason or the usage shows the answer was whole.
                    None if finish_reason.is_some() || usage.is_some() => break Ok(()),
                    None => break Err(Some(UpstreamError::InvalidResponse(
                        "the stream ended before the answer was complete".into(),
                    ))),
                    Some(Err(e)) => break Err(Some(e)),
                    Some(Ok(StreamEvent::Chunk(chunk))) => {
                        if !chunk.model.is_empty() {
                            served = Some(chunk.model.clone());
                        }
                        if let Some(reason) = chunk.finish_reason() {
                            finish_reason = Some(reason.to_owned());
                        }
                        if let Some(u) = &chunk.usage {
                            usage = Some(UsageSummary::from(u));
                        }
                        let content = chunk.content();
                        if !content.is_empty() {
                            text.push_str(content);
                            deltas += 1;
                            if tx.send(ChatEvent::Delta(content.to_owned())).await.is_err() {
                                break Err(None);
                            }
                        }
                    }
                },
            }
        };
        // Dropping the stream closes the upstream connection: for an aborted answer
        // that is the cancellation.
        drop(upstream);
        let usage = usage.unwrap_or(UsageSummary {
            completion_tokens: deltas,
            ..UsageSummary::default()
        });
        let (status, error) = match &ending {
            Ok(()) => (MessageStatus::Complete, None),
            Err(None) => (MessageStatus::Aborted, None),
            Err(Some(e)) => (MessageStatus::Failed, Some(e)),
        };
        let error_text = error.map(ToString::to_string);
        let stored = self
            .finish_with_id(
                &prepared,
                message_id,
                text,
                status,
                served.clone(),
                error_text.as_deref(),
                &usage,
            )
            .await;
        let event = match (ending, stored) {
            (Ok(()), Ok(message)) => ChatEvent::Done(Box::new(ChatDone {
                message,
                model: served.unwrap_or_else(|| prepared.request.model.clone()),
                finish_reason,
                usage,
            })),
            (Err(Some(e)), _) => ChatEvent::Failed {
                message_id,
                error: Box::new(e.into()),
            },
            (_, Err(e)) => ChatEvent::Failed {
                message_id,
                error: Box::new(e),
            },
            (Err(None), Ok(_)) => return,
        };
        let _ = tx.send(event).await;
    }

    /// Checks the input and the conversation, and builds the request and the
    /// question to store (the caller stores it while the upstream is asked).
    async fn prepare(
        &self,
        user_id: Uuid,
        role: Role,
        input: ChatInput,
    ) -> Result<(Prepared, Question), GenerationError> {
        validate(&input)?;
        let plan = self.routing.plan(&input.model, Action::Chat, role)?;
        let now = Utc::now();
        let (conversation, mut history) = match input.conversation_id {
            Some(id) => {
                let (conversation, messages) = self.conversation(user_id, id).await?;
                let history: Vec<Message> = messages
                    .into_iter()
                    .filter(|m| m.status == MessageStatus::Complete)
                    .map(|m| Message::new(&m.role, m.content))
                    .collect();
                (conversation, history)
            }
            None => {
                let conversation = Conversation {
                    id: Uuid::now_v7(),
                    user_id,
                    title: title_from(&input.messages),
                    model: Some(input.model.clone()),
                    created_at: now,
                    updated_at: now,
                };
                (conversation, Vec::new())
            }
        };
        let new: Vec<ChatMessage> = input
            .messages
            .iter()
            .map(|m| ChatMessage {
                id: Uuid::now_v7(),
                conversation_id: conversation.id,
                role: m.role.clone(),
                content: m.content.clone(),
                status: MessageStatus::Complete,
                model: None,
                error: None,
                created_at: now,
            })
            .collect();
        let question = Question {
            messages: new,
            new_conversation: input.conversation_id.is_none(),
            at: now,
        };
        history.extend(
            input
                .messages
                .iter()
                .map(|m| Message::new(&m.role, m.content.clone())),
        );
        let summary = input
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| excerpt(&m.content, 200))
            .unwrap_or_default();
        let prepared = Prepared {
            user_id,
            conversation,
            plan,
            request: ChatRequest {
                model: input.model,
                messages: history,
                temperature: input.temperature,
                max_tokens: input.max_tokens,
                ..ChatRequest::default()
            },
            summary,
            started: Instant::now(),
        };
        Ok((prepared, question))
    }

    /// Stores a turn's new messages: with the conversation for a first turn,
    /// else added to it, which marks its activity and the model last asked.
    async fn store_question(&self, prepared: &Prepared, question: Question) -> Result<(), GenerationError> {
        let conversation = &prepared.conversation;
        if question.new_conversation {
            self.store
                .create_conversation(conversation, &question.messages)
                .await?;
        } else {
            self.store
                .add_messages(
                    conversation.id,
                    &question.messages,
                    Some(&prepared.request.model),
                    question.at,
                )
                .await?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        prepared: &Prepared,
        text: String,
        status: MessageStatus,
        served: Option<String>,
        error: Option<&str>,
        usage: &UsageSummary,
    ) -> Result<ChatMessage, GenerationError> {
        self.finish_with_id(prepared, Uuid::now_v7(), text, status, served, error, usage)
            .await
    }

    /// Stores a turn that got no answer (the error in place of the assistant's
    /// message) and hands the error back for the caller to return.
    async fn failed(
        &self,
        prepared: &Prepared,
        e: GenerationError,
    ) -> Result<GenerationError, GenerationError> {
        let error = e.to_string();
        self.finish(
            prepared,
            String::new(),
            MessageStatus::Failed,
            None,
            Some(&error),
            &UsageSummary::default(),
        )
        .await?;
        Ok(e)
    }

    /// Stores the assistant's message and the usage record.
    #[expect(clippy::too_many_arguments, reason = "the parts of one outcome")]
    async fn finish_with_id(
        &self,
        prepared: &Prepared,
        message_id: Uuid,
        text: String,
        status: MessageStatus,
        served: Option<String>,
        error: Option<&str>,
        usage: &UsageSummary,
    ) -> Result<ChatMessage, GenerationError> {
        let now = Utc::now();
        let message = ChatMessage {
            id: message_id,
            conversation_id: prepared.conversation.id,
            role: "assistant".into(),
            content: text,
            status,
            model: served.clone().or_else(|| Some(prepared.request.model.clone())),
            error: error.map(str::to_owned),
            created_at: now,
        };
        self.usage
            .record(GenerationRecord {
                id: message_id,
                user_id: prepared.user_id,
                kind: GenerationKind::Chat,
                model_requested: prepared.request.model.clone(),
                model_served: served,
                status: match status {
                    MessageStatus::Complete => GenerationStatus::Succeeded,
                    MessageStatus::Failed => GenerationStatus::Failed,
                    MessageStatus::Aborted => GenerationStatus::Aborted,
                },
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_nanousd: usage.cost_usd.map_or(0, usd_to_nanos),
                latency_ms: u64::try_from(prepared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                error: message.error.clone(),
                summary: prepared.summary.clone(),
                conversation_id: Some(prepared.conversation.id),
                media_ids: Vec::new(),
                created_at: now,
            })
            .await;
        self.store
            .add_messages(
                prepared.conversation.id,
                std::slice::from_ref(&message),
                None,
                now,
            )
            .await?;
        Ok(message)
    }

    // ---- conversations ----

    pub async fn conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<(Vec<Conversation>, bool), GenerationError> {
        Ok(self.store.conversations(query).await?)
    }

    pub async fn conversation(
        &self,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<(Conversation, Vec<ChatMessage>), GenerationError> {
        // Both reads at once (each a trip to the blocking pool). The messages
        // of a conversation that is not the user's are read only to be dropped.
        let (conversation, messages) =
            tokio::try_join!(self.store.conversation(user_id, id), self.store.messages(id))?;
        let conversation = conversation.ok_or(GenerationError::NotFound("conversation"))?;
        Ok((conversation, messages))
    }

    pub async fn rename(
        &self,
        user_id: Uuid,
        id: Uuid,
        title: &str,
    ) -> Result<Conversation, GenerationError> {
        let title = title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(GenerationError::Invalid(format!(
                "title must have 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        self.store
            .rename_conversation(user_id, id, title, Utc::now())
            .await
            .map_err(not_found_as("conversation"))
    }

    pub async fn delete(&self, user_id: Uuid, id: Uuid) -> Result<(), GenerationError> {
        self.store
            .delete_conversation(user_id, id)
            .await
            .map_err(not_found_as("conversation"))
    }
}

/// A turn's new messages, stored while the upstream is asked.
struct Question {
    messages: Vec<ChatMessage>,
    /// The first turn: the conversation is stored with them.
    new_conversation: bool,
    at: DateTime<Utc>,
}

/// Runs `answer` while `stored` completes, and gives the answer back only once
/// the question is stored: the upstream's first byte does not wait for the
/// commit, and no answer goes out (or is stored) for a question that was not
/// kept. A failed write drops `answer` at once, which cancels the upstream call
/// (after it has begun, unlike when the write came first: a failing store is
/// rare, a commit on every turn is not).
async fn while_storing<T>(
    stored: impl Future<Output = Result<(), GenerationError>>,
    answer: impl Future<Output = T>,
) -> Result<T, GenerationError> {
    let ((), answer) = tokio::try_join!(stored, async { Ok(answer.await) })?;
    Ok(answer)
}

fn not_found_as(what: &'static str) -> impl Fn(atelier_store::StoreError) -> GenerationError {
    move |e| match e {
        atelier_store::StoreError::NotFound => GenerationError::NotFound(what),
        other => other.into(),
    }
}

fn validate(input: &ChatInput) -> Result<(), GenerationError> {
    let invalid = |m: String| Err(GenerationError::Invalid(m));
    if input.model.trim().is_empty() || input.model.len() > 200 {
        return invalid("model must be a model id, e.g. openai/gpt-4o-mini".into());
    }
    if input.messages.is_empty() || input.messages.len() > MAX_MESSAGES {
        return invalid(format!("messages must have 1 to {MAX_MESSAGES} entries"));
    }
    for (i, m) in input.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return invalid(format!("messages[{i}].role must be system, user or assistant"));
        }
        if m.content.trim().is_empty() || m.content.chars().count() > MAX_CONTENT_CHARS {
            return invalid(format!(
                "messages[{i}].content must have 1 to {MAX_CONTENT_CHARS} characters"
            ));
        }
    }
    if input.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return invalid("temperature must be between 0 and 2".into());
    }
    if input.max_tokens.is_some_and(|t| t == 0 || t > 1_000_000) {
        return invalid("max_tokens must be between 1 and 1000000".into());
    }
    Ok(())
}

/// A conversation's title: the start of its first user message.
fn title_from(messages: &[InputMessage]) -> String {
    messages
        .iter()
        .find(|m| m.role == "user")
        .map(|m| excerpt(&m.content, 60))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "New chat".into())
}

/// The first `max` characters of the text on one line, with an ellipsis if cut.
pub fn excerpt(text: &str, max: usize) -> String {
    // Most prompts are one short line already (every `/v1` request's summary
    // comes here): copied whole, not rebuilt a character at a time.
    if is_one_line(text, max) {
        return text.to_owned();
    }
    squeezed(text, max)
}

/// At most `max` characters of ASCII, single spaces between words and none at
/// either end: what [`squeezed`] would return unchanged.
fn is_one_line(text: &str, max: usize) -> bool {
    text.len() <= max
        && text.is_ascii()
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.contains("  ")
        // The other ASCII whitespace (`char::is_whitespace`): tab to carriage return.
        && !text.bytes().any(|b| matches!(b, b'\t'..=b'\r'))
}

fn squeezed(text: &str, max: usize) -> String {
    // The characters of the text with its whitespace runs made single spaces,
    // read only as far as the excerpt needs: a long prompt is not copied whole.
    let mut chars = text
        .split_whitespace()
        .enumerate()
        .flat_map(|(i, word)| (i > 0).then_some(' ').into_iter().chain(word.chars()));
    let mut line: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        // Too long: the first `max - 1` characters and an ellipsis.
        line.pop();
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// The upstream is asked while the question is being stored: here the
    /// write can only finish once the answer has begun.
    #[tokio::test]
    async fn the_answer_is_asked_for_while_the_question_is_stored() {
        let (begun, answer_begun) = oneshot::channel();
        let stored = async {
            answer_begun.await.expect("the answer began");
            Ok(())
        };
        let answer = async {
            begun.send(()).expect("the write waits");
            "answer"
        };
        let both = tokio::time::timeout(Duration::from_secs(5), while_storing(stored, answer)).await;
        assert_eq!(both.expect("ran side by side").expect("stored"), "answer");
    }

    /// An answer that is ready first is given back only once the question is stored.
    #[tokio::test]
    async fn an_early_answer_waits_for_the_question_to_be_stored() {
        let start = Instant::now();
        let stored = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        };
        let answer = while_storing(stored, async { "answer" }).await.expect("stored");
        assert_eq!(answer, "answer");
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
    }

    /// A question that could not be stored gets no answer: the write's error
    /// comes back at once and the upstream call is dropped, which cancels it.
    #[tokio::test]
    async fn a_failed_write_drops_the_answer_at_once() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(Arc::clone(&dropped));
        let answer = async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        };
        let stored = async { Err(GenerationError::Invalid("disk full".into())) };
        let result = tokio::time::timeout(Duration::from_secs(5), while_storing(stored, answer))
            .await
            .expect("not waiting for the answer");
        assert!(matches!(result, Err(GenerationError::Invalid(m)) if m == "disk full"));
        assert!(dropped.load(Ordering::SeqCst), "the upstream call is dropped");
    }

    /// Every open stream's channel holds its events in blocks of 32 slots, each
    /// slot the size of the largest event: a delta (a `String`) and a tag.
    #[test]
    fn stream_events_are_as_small_as_a_delta() {
        assert!(size_of::<ChatEvent>() <= 32, "{} bytes", size_of::<ChatEvent>());
        let pass = size_of::<crate::service::passthrough::PassEvent>();
        assert!(pass <= 32, "{pass} bytes");
    }

    #[test]
    fn titles_and_excerpts_are_one_short_line() {
        assert_eq!(excerpt("  hello\n\n world  ", 60), "hello world");
        assert_eq!(excerpt(&"a".repeat(100), 10), format!("{}…", "a".repeat(9)));
        assert_eq!(excerpt(&"a".repeat(10), 10), "a".repeat(10));
        assert_eq!(excerpt(" été  à\tParis ", 9), "été à Pa…");
        assert_eq!(excerpt("été à", 5), "été à");
        assert_eq!(excerpt("ab", 0), "…");
        let messages = vec![
            InputMessage {
                role: "system".into(),
                content: "be terse".into(),
            },
            InputMessage {
                role: "user".into(),
                content: "Plan a trip\nto Lisbon".into(),
            },
        ];
        assert_eq!(title_from(&messages), "Plan a trip to Lisbon");
    }

    #[test]
    fn a_short_line_is_its_own_excerpt() {
        let texts = [
            "",
            "Say hello in one line",
            "a b",
            "a  b",
            " a",
            "a ",
            "a\tb",
            "a\x0bb",
            "a\rb",
            "a\x1fb",
            "été",
            "a\u{a0}b",
            "abcde",
            "abcdef",
        ];
        for text in texts {
            for max in [0, 3, 5, 60] {
                assert_eq!(excerpt(text, max), squeezed(text, max), "{text:?} at {max}");
            }
        }
        assert!(is_one_line("Say hello in one line", 60));
        assert!(!is_one_line("a\x0bb", 60));
    }
}
