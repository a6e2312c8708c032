//! Media: generated images and videos and uploaded frames. The bytes live in an
//! object store (a local folder by default, an S3-compatible bucket shared by
//! several instances, memory in some tests), the records in the database. Only the
//! owner (or an admin) may read an item. Writes stream: an item larger than
//! `media.part_size_bytes` goes up as S3 multipart, with at most two parts in
//! memory per writer, whatever the item's size.

use std::ops::Range;
use std::sync::Arc;

use atelier_store::{MediaKind, MediaRecord, Role, Store};
use bytes::Bytes;
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::generation_error::GenerationError;

/// What the bytes are, judged from the bytes, never from a name or a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: &'static str,
    pub extension: &'static str,
}

/// Recognises the image formats accepted as uploads and outputs.
pub fn sniff_image(bytes: &[u8]) -> Option<Sniffed> {
    let is = |content_type, extension| {
        Some(Sniffed {
            content_type,
            extension,
        })
    };
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        is("image/png", "png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        is("image/jpeg", "jpg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        is("image/webp", "webp")
    } else {
        None
    }
}

/// Recognises the video containers upstreams return.
pub fn sniff_video(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        Some(Sniffed {
            content_type: "video/mp4",
            extension: "mp4",
        })
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(Sniffed {
            content_type: "video/webm",
            extension: "webm",
        })
    } else {
        None
    }
}

#[derive(Clone)]
pub struct MediaLibrary {
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn Store>,
    max_upload: u64,
    part_size: usize,
}

/// Bytes looked at to tell a format (the longest signature is 12 bytes).
const SNIFF_LEN: usize = 16;

/// Parts of one item uploading at once: memory per writer is about this times the
/// part size.
const PARTS_IN_FLIGHT: usize = 2;

/// Where a media item's bytes are: one folder per user.
fn storage_key(user_id: Uuid, id: Uuid, extension: &str) -> String {
    format!("media/{user_id}/{id}.{extension}")
}

impl MediaLibrary {
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        store: Arc<dyn Store>,
        max_upload: u64,
        part_size: usize,
    ) -> Self {
        MediaLibrary {
            objects,
            store,
            max_upload,
            part_size,
        }
    }

    pub fn max_upload(&self) -> u64 {
        self.max_upload
    }

    /// Stores bytes whose type was already established, and records them.
    pub async fn save(
        &self,
        user_id: Uuid,
        kind: MediaKind,
        sniffed: Sniffed,
        bytes: Bytes,
        generation_id: Option<Uuid>,
    ) -> Result<MediaRecord, GenerationError> {
        let chunks = futures_util::stream::iter([Ok(bytes)]);
        self.save_stream(user_id, kind, |_| Ok(sniffed), chunks, generation_id)
            .await
    }

    /// Streams an item of any size into storage and records it. `sniff` judges
    /// the first bytes (and may refuse them); nothing is kept of a refused or
    /// broken stream.
    pub async fn save_stream(
        &self,
        user_id: Uuid,
        kind: MediaKind,
        sniff: impl FnOnce(&[u8]) -> Result<Sniffed, GenerationError>,
        chunks: impl Stream<Item = Result<Bytes, GenerationError>> + Send,
        generation_id: Option<Uuid>,
    ) -> Result<MediaRecord, GenerationError> {
        let mut chunks = std::pin::pin!(chunks);
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0;
        while head_len < SNIFF_LEN {
            let Some(chunk) = chunks.next().await else { break };
            let chunk = chunk?;
            head_len += chunk.len();
            head.push(chunk);
        }
        let first: Vec<u8> = head
            .iter()
            .flat_map(|b| b.iter().copied())
            .take(SNIFF_LEN)
            .collect();
        let sniffed = sniff(&first)?;

        let id = Uuid::now_v7();
        let key = storage_key(user_id, id, sniffed.extension);
        let mut writer = BufWriter::with_capacity(
            Arc::clone(&self.objects),
            ObjectPath::from(key.as_str()),
            self.part_size,
        )
        .with_max_concurrency(PARTS_IN_FLIGHT);
        let mut size = 0u64;
        let written: Result<(), GenerationError> = async {
            for chunk in head {
                size += chunk.len() as u64;
                writer.put(chunk).await?;
            }
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                writer.put(chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            // Drops the parts uploaded so far (a multipart upload would linger).
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key, error = %abort, "cannot abort a partial media upload");
            }
            return Err(e);
        }
        writer
            .shutdown()
            .await
            .map_err(|e| GenerationError::Internal(anyhow::Error::new(e).context("media storage")))?;
        let record = MediaRecord {
            id,
            user_id,
            kind,
            content_type: sniffed.content_type.to_owned(),
            size_bytes: size,
            storage_key: key,
            generation_id,
            created_at: Utc::now(),
        };
        self.store.insert_media(&record).await?;
        Ok(record)
    }

    /// Checks and stores an uploaded image (a start or end frame).
    pub async fn save_upload(&self, user_id: Uuid, bytes: Bytes) -> Result<MediaRecord, GenerationError> {
        if bytes.len() as u64 > self.max_upload {
            return Err(GenerationError::UploadTooLarge {
                limit: self.max_upload,
            });
        }
        let sniffed = sniff_image(&bytes)
            .ok_or_else(|| GenerationError::UnsupportedMedia("the image must be PNG, JPEG or WebP".into()))?;
        self.save(user_id, MediaKind::Upload, sniffed, bytes, None).await
    }

    /// The record, if `viewer` may see it: its owner, or an admin.
    pub async fn visible(&self, id: Uuid, viewer: Uuid, role: Role) -> Result<MediaRecord, GenerationError> {
        match self.store.media(id).await? {
            Some(m) if m.user_id == viewer || role == Role::Admin => Ok(m),
            _ => Err(GenerationError::NotFound("media")),
        }
    }

    /// The whole item in memory (for frames sent upstream, which are small).
    pub async fn read_all(&self, record: &MediaRecord) -> Result<Bytes, GenerationError> {
        let result = self
            .objects
            .get(&ObjectPath::from(record.storage_key.as_str()))
            .await?;
        Ok(result.bytes().await?)
    }

    /// The item or a byte range of it, as a stream.
    pub async fn open(
        &self,
        record: &MediaRecord,
        range: Option<Range<u64>>,
    ) -> Result<GetResult, GenerationError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        Ok(self
            .objects
            .get_opts(&ObjectPath::from(record.storage_key.as_str()), options)
            .await?)
    }

    /// Removes stored bytes (when the account goes). Missing objects are fine.
    pub async fn remove(&self, keys: &[String]) {
        for key in keys {
            match self.objects.delete(&ObjectPath::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(key, error = %e, "cannot remove media"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_judged_by_content() {
        assert_eq!(
            sniff_image(b"\x89PNG\r\n\x1a\nrest").map(|s| s.content_type),
            Some("image/png")
        );
        assert_eq!(
            sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]).map(|s| s.extension),
            Some("jpg")
        );
        assert_eq!(
            sniff_image(b"RIFF\0\0\0\0WEBPVP8 ").map(|s| s.content_type),
            Some("image/webp")
        );
        assert_eq!(sniff_image(b"GIF89a"), None);
        assert_eq!(sniff_image(b"<svg xmlns="), None);
        assert_eq!(
            sniff_video(b"\0\0\0\x18ftypmp42").map(|s| s.content_type),
            Some("video/mp4")
        );
        assert_eq!(sniff_video(b"\x89PNG"), None);
    }
}
