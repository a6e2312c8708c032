//! A `/v1` chat request, parsed only as deep as atelier needs.
//!
//! The body is kept as the client sent it, with the byte ranges of its
//! top-level fields; what goes upstream is that JSON with only `model` and
//! `stream` set by atelier, written by copying the other fields' bytes. Nothing
//! is copied out of the body while it is read: a key is a range unless it had
//! escapes, a value always is. The conversation (`messages`), often most of the
//! body, is never built into a tree: the cost estimate sums its strings' lengths
//! while scanning it, and the usage summary reads the last user message alone.
//! A long conversation costs a scan, not an allocation per value.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::chat::excerpt;

/// A chat request's body and its top-level fields, in the client's order.
#[derive(Debug)]
pub struct ChatBody {
    text: String,
    fields: Vec<Field>,
}

/// Where one top-level field is in the body.
#[derive(Debug)]
struct Field {
    key: Key,
    /// The value's JSON text.
    value: Range<usize>,
}

#[derive(Debug)]
enum Key {
    /// The key's text, as written between its quotes (it had no escapes).
    At(Range<usize>),
    /// A key written with escapes, unescaped.
    Unescaped(Box<str>),
}

/// A body that is not a JSON object in UTF-8 ([`BodyError::NotAnObject`]),
/// handed back whole.
#[derive(Debug)]
pub struct NotAnObject(pub Vec<u8>);

/// Why a body is not a chat request atelier can pass on.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not a JSON object.
    NotAnObject,
    /// `model` missing, empty or not a string.
    NoModel,
    /// `messages` missing, empty or not an array.
    NoMessages,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::NotAnObject => "the body must be a JSON object",
            BodyError::NoModel => "model is required",
            BodyError::NoMessages => "messages must be a non-empty array",
        })
    }
}

impl ChatBody {
    /// Splits a body into its top-level fields; unless it is a JSON object in
    /// UTF-8, the body comes back so the caller can say why.
    pub fn parse(body: Bytes) -> Result<Self, NotAnObject> {
        // Without a copy when the body's buffer is its own.
        let text = String::from_utf8(body.into()).map_err(|e| NotAnObject(e.into_bytes()))?;
        let fields = serde_json::from_str::<Fields<'_>>(&text).ok().map(|fields| {
            let at = |part: &str| part.as_ptr() as usize - text.as_ptr() as usize;
            let range = |part: &str| at(part)..at(part) + part.len();
            fields
                .0
                .into_iter()
                .map(|(key, value)| Field {
                    key: match key {
                        Cow::Borrowed(key) => Key::At(range(key)),
                        Cow::Owned(key) => Key::Unescaped(key.into()),
                    },
                    value: range(value.get()),
                })
                .collect()
        });
        match fields {
            Some(fields) => Ok(ChatBody { text, fields }),
            None => Err(NotAnObject(text.into_bytes())),
        }
    }

    fn key<'a>(&'a self, field: &'a Field) -> &'a str {
        match &field.key {
            Key::At(range) => &self.text[range.clone()],
            Key::Unescaped(key) => key,
        }
    }

    fn value(&self, field: &Field) -> &str {
        &self.text[field.value.clone()]
    }

    /// The last value given for `name` (JSON's duplicate keys: the last wins, as
    /// for every common parser), as its JSON text.
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|field| self.key(field) == name)
            .map(|field| self.value(field))
    }

    fn parsed<'a, T: Deserialize<'a>>(&'a self, name: &str) -> Option<T> {
        serde_json::from_str(self.get(name)?).ok()
    }

    /// The requested model; `Err` unless it is a non-blank string.
    pub fn model(&self) -> Result<String, BodyError> {
        self.parsed::<Cow<'_, str>>("model")
            .filter(|m| !m.trim().is_empty())
            .map(Cow::into_owned)
            .ok_or(BodyError::NoModel)
    }

    pub fn streams(&self) -> bool {
        self.parsed::<bool>("stream").unwrap_or(false)
    }

    /// `max_completion_tokens`, or the older `max_tokens`.
    pub fn max_tokens(&self) -> Option<u32> {
        self.parsed::<u64>("max_completion_tokens")
            .or_else(|| self.parsed::<u64>("max_tokens"))
            .and_then(|t| u32::try_from(t).ok())
    }

    /// The messages, each as raw JSON; `Err` unless a non-empty array.
    fn messages(&self) -> Result<Vec<&RawValue>, BodyError> {
        self.parsed::<Vec<&RawValue>>("messages")
            .filter(|m| !m.is_empty())
            .ok_or(BodyError::NoMessages)
    }

    /// The bytes of every string in the messages (roles, texts, image URLs), for
    /// the cost estimate.
    pub fn text_len(&self) -> usize {
        self.get("messages").map_or(0, |raw| {
            let mut de = serde_json::Deserializer::from_str(raw);
            StringBytes.deserialize(&mut de).unwrap_or(0)
        })
    }

    /// The start of the last user message, for the history; `Err` when there are
    /// no messages to send.
    pub fn summary(&self) -> Result<String, BodyError> {
        let messages = self.messages()?;
        let last_user = messages.iter().rev().find_map(|m| {
            let message: Message<'_> = serde_json::from_str(m.get()).ok()?;
            (message.role.as_deref() == Some("user")).then_some(message.content)
        });
        Ok(match last_user.flatten() {
            None => String::new(),
            Some(content) => match serde_json::from_str::<Cow<'_, str>>(content.get()) {
                Ok(text) => excerpt(&text, 200),
                // Parts (text and images): their JSON, as written.
                Err(_) => excerpt(content.get(), 200),
            },
        })
    }

    /// The body to send upstream: `model` and `stream` as given here, every
    /// other field as the client wrote it.
    pub fn to_upstream(&self, model: &str, stream: bool) -> Bytes {
        let mut out = Vec::with_capacity(self.text.len() + model.len() + 32);
        out.extend_from_slice(b"{\"model\":");
        write_json(&mut out, model);
        out.extend_from_slice(if stream {
            b",\"stream\":true"
        } else {
            b",\"stream\":false"
        });
        for field in &self.fields {
            let key = self.key(field);
            if key != "model" && key != "stream" {
                out.push(b',');
                write_json(&mut out, key);
                out.push(b':');
                out.extend_from_slice(self.value(field).as_bytes());
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

fn write_json(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, text);
}

/// One message, as far as the summary needs it.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// An object's fields with their values unparsed, borrowed from the text (a
/// key is copied only when it had escapes).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key_seed(KeyText)? {
                    fields.push((key, map.next_value()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// A key, borrowed when the text holds it as is. (`Cow`'s own `Deserialize`
/// always copies.)
struct KeyText;

impl<'de> DeserializeSeed<'de> for KeyText {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyText {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Sums the lengths of the strings in a JSON value (object keys aside) as the
/// parser meets them, without building the value.
struct StringBytes;

impl<'de> DeserializeSeed<'de> for StringBytes {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringBytes {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        Ok(v.len())
    }

    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut total = 0;
        while let Some(n) = seq.next_element_seed(StringBytes)? {
            total += n;
        }
        Ok(total)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut total = 0;
        while map.next_key::<IgnoredAny>()?.is_some() {
            total += map.next_value_seed(StringBytes)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn body(value: &Value) -> Result<ChatBody, BodyError> {
        ChatBody::parse(Bytes::from(value.to_string())).map_err(|_| BodyError::NotAnObject)
    }

    #[test]
    fn the_upstream_body_is_the_clients_with_model_and_stream_set() {
        let client = json!({
            "model": "atelier/chat-default",
            "messages": [{"role": "user", "content": "héllo \"there\""}],
            "temperature": 0.2,
            "stream": true,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "extra": {"nested": [1, 2, {"deep": null}]},
        });
        let b = body(&client).expect("parsed");
        let sent: Value = serde_json::from_slice(&b.to_upstream("openai/gpt-4o-mini", false)).expect("json");
        let mut expected = client.clone();
        expected["model"] = json!("openai/gpt-4o-mini");
        expected["stream"] = json!(false);
        assert_eq!(sent, expected);
        // Keys that need escaping survive the copy.
        let odd = body(&json!({"model": "m", "messages": [1], "we\"ird\n": "v"})).expect("parsed");
        let sent: Value = serde_json::from_slice(&odd.to_upstream("m2", true)).expect("json");
        assert_eq!(
            sent,
            json!({"model": "m2", "stream": true, "messages": [1], "we\"ird\n": "v"})
        );
    }

    #[test]
    fn fields_are_read_as_the_client_sent_them() {
        let b = body(
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                             "max_tokens": 50, "stream": true}),
        )
        .expect("parsed");
        assert_eq!(b.model(), Ok("m".to_owned()));
        assert!(b.streams());
        assert_eq!(b.max_tokens(), Some(50));
        let newer =
            body(&json!({"model": "m", "max_completion_tokens": 7, "max_tokens": 50})).expect("parsed");
        assert_eq!(newer.max_tokens(), Some(7));
        assert!(!newer.streams());

        assert_eq!(
            body(&json!({"messages": []})).expect("parsed").model(),
            Err(BodyError::NoModel)
        );
        assert_eq!(
            body(&json!({"model": "  "})).expect("parsed").model(),
            Err(BodyError::NoModel)
        );
        assert_eq!(
            body(&json!({"model": 3})).expect("parsed").model(),
            Err(BodyError::NoModel)
        );
        assert_eq!(body(&json!([1, 2])).err(), Some(BodyError::NotAnObject));
        assert_eq!(body(&json!("text")).err(), Some(BodyError::NotAnObject));
    }

    #[test]
    fn only_a_whole_json_object_in_utf8_is_a_body() {
        let parse = |raw: &'static [u8]| {
            ChatBody::parse(Bytes::from_static(raw))
                .map_err(|NotAnObject(back)| {
                    assert_eq!(back, raw, "the body comes back whole");
                    BodyError::NotAnObject
                })
                .err()
        };
        assert_eq!(parse(br#"{"model": "m"}"#), None);
        for bad in [
            &br#"{"model": "m"} {}"#[..],
            br#"{"model": "m""#,
            br#"{"model": "m",}"#,
            b"{\"model\": \"\xff\"}",
            b"{\"\xff\": 1}",
            b"",
        ] {
            assert_eq!(parse(bad), Some(BodyError::NotAnObject), "{bad:?}");
        }
    }

    #[test]
    fn a_key_written_with_escapes_is_read_unescaped() {
        let raw = r#"{"mo\u0064el": "m", "me\u0073sages": [{"role": "user", "content": "x"}], "t\"": 1}"#;
        let b = ChatBody::parse(Bytes::from(raw)).expect("parsed");
        assert_eq!(b.model(), Ok("m".to_owned()));
        assert_eq!(b.summary(), Ok("x".to_owned()));
        // The escaped `model` is replaced, not sent twice.
        let sent: Value = serde_json::from_slice(&b.to_upstream("m2", false)).expect("json");
        assert_eq!(
            sent,
            json!({"model": "m2", "stream": false, "messages": [{"role": "user", "content": "x"}], "t\"": 1})
        );
    }

    #[test]
    fn the_summary_is_the_last_user_message() {
        let b = body(&json!({"model": "m", "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second\n  question"},
            {"role": "assistant", "content": "another"},
        ]}))
        .expect("parsed");
        assert_eq!(b.summary(), Ok("second question".to_owned()));
        let raw = r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "look"}]}]}"#;
        let parts = ChatBody::parse(Bytes::from(raw)).expect("parsed");
        assert_eq!(
            parts.summary(),
            Ok(r#"[{"type": "text", "text": "look"}]"#.to_owned())
        );
        let no_user = body(&json!({"model": "m", "messages": [{"role": "system", "content": "s"}]}));
        assert_eq!(no_user.expect("parsed").summary(), Ok(String::new()));
        for messages in [json!([]), json!("x"), Value::Null] {
            let b = body(&json!({"model": "m", "messages": messages})).expect("parsed");
            assert_eq!(b.summary(), Err(BodyError::NoMessages));
        }
    }

    #[test]
    fn text_len_counts_the_strings_of_a_conversation() {
        let b = body(&json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief.", "weight": 2},
            {"role": "user", "content": [{"type": "text", "text": "héllo"}]},
        ]}))
        .expect("parsed");
        let expected = ["system", "Be brief.", "user", "text", "héllo"]
            .iter()
            .map(|s| s.len())
            .sum::<usize>();
        assert_eq!(b.text_len(), expected);
        assert_eq!(body(&json!({"model": "m"})).expect("parsed").text_len(), 0);
    }
}
