//! Video generation: jobs submitted upstream, then followed by a background worker.
//!
//! A job is stored as soon as the upstream accepts it. The worker leases due jobs
//! (one owner at a time, so several instances can share the table), polls them with
//! growing intervals, downloads a finished video into the media store, and moves
//! the job to its end state with a compare-and-set: only the instance whose update
//! wins records the usage, so the cost is counted once. A failed poll (timeout,
//! upstream down) only reschedules the job. Unfinished jobs are resumed after a
//! restart because they are just rows waiting to be due.

use std::sync::Arc;
use std::time::Duration;

use atelier_openrouter::{Client, FrameImage, UpstreamError, VideoRequest, VideoStatus};
use atelier_store::{
    GenerationKind, GenerationRecord, GenerationStatus, JobOutcome, JobProgress, JobStatus, MediaKind, Role,
    Store, VideoJob, usd_to_nanos,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::Routing;
use super::chat::excerpt;
use super::chrono_duration;
use super::generate::{ASPECT_RATIOS, decode_data_url};
use super::generation_error::GenerationError;
use super::media::{MediaLibrary, sniff_video};
use super::routing::Action;
use super::usage::UsageRecorder;
use crate::config::VideoSettings;

pub const RESOLUTIONS: &[&str] = &["480p", "720p", "768p", "1080p", "1K", "2K", "4K"];
const CLAIM_BATCH: u32 = 8;

/// A start or end frame, however the client supplied it.
#[derive(Debug, Clone)]
pub enum FrameInput {
    /// Uploaded bytes (multipart).
    Bytes(Bytes),
    /// `data:image/…;base64,…`. Never a URL to fetch.
    DataUrl(String),
    /// Media the caller owns.
    Media(Uuid),
}

#[derive(Debug, Clone, Default)]
pub struct VideoInput {
    pub model: String,
    pub prompt: String,
    pub duration: Option<u32>,
    pub resolution: Option<String>,
    pub aspect_ratio: Option<String>,
    pub first_frame: Option<FrameInput>,
    pub last_frame: Option<FrameInput>,
}

#[derive(Clone)]
pub struct VideoService {
    client: Client,
    store: Arc<dyn Store>,
    routing: Routing,
    media: MediaLibrary,
    usage: UsageRecorder,
    settings: VideoSettings,
    /// This process's name as a lease owner.
    instance: String,
}

impl VideoService {
    pub fn new(
        client: Client,
        store: Arc<dyn Store>,
        routing: Routing,
        media: MediaLibrary,
        usage: UsageRecorder,
        settings: VideoSettings,
    ) -> Self {
        VideoService {
            client,
            store,
            routing,
            media,
            usage,
            settings,
            instance: format!("atelier-{}", Uuid::now_v7()),
        }
    }

    pub async fn submit(
        &self,
        user_id: Uuid,
        role: Role,
        input: VideoInput,
    ) -> Result<VideoJob, GenerationError> {
        validate(&input)?;
        let plan = self.routing.plan(&input.model, Action::Video, role)?;
        let mut frames = Vec::new();
        for (frame, kind) in [
            (&input.first_frame, "first_frame"),
            (&input.last_frame, "last_frame"),
        ] {
            if let Some(frame) = frame {
                frames.push(FrameImage::new(self.frame_data_url(user_id, frame).await?, kind));
            }
        }
        let request = VideoRequest {
            model: input.model.clone(),
            prompt: Some(input.prompt.clone()).filter(|p| !p.trim().is_empty()),
            duration: input.duration,
            resolution: input.resolution.clone(),
            aspect_ratio: input.aspect_ratio.clone(),
            frame_images: frames,
        };
        let (upstream, served) = self
            .routing
            .router
            .run(&plan, |model| {
                let request = VideoRequest {
                    model,
                    ..request.clone()
                };
                async move {
                    self.client
                        .submit_video(&request)
                        .await
                        .map_err(GenerationError::from)
                }
            })
            .await?;
        let now = Utc::now();
        let job = VideoJob {
            id: Uuid::now_v7(),
            user_id,
            generation_id: Uuid::now_v7(),
            model: served,
            prompt: input.prompt.clone(),
            params: json!({
                "duration": input.duration,
                "resolution": input.resolution,
                "aspect_ratio": input.aspect_ratio,
                "first_frame": input.first_frame.is_some(),
                "last_frame": input.last_frame.is_some(),
            })
            .to_string(),
            upstream_id: upstream.id,
            polling_url: upstream.polling_url,
            status: JobStatus::Pending,
            error: None,
            media_id: None,
            cost_nanousd: None,
            polls: 0,
            next_poll_at: now + chrono_duration(self.settings.poll_min_interval),
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        self.store.create_video_job(&job).await?;
        tracing::info!(job_id = %job.id, upstream_id = job.upstream_id, model = job.model, "video job accepted");
        Ok(job)
    }

    /// An image frame as a data URL; uploads are kept as the user's media.
    async fn frame_data_url(&self, user_id: Uuid, frame: &FrameInput) -> Result<String, GenerationError> {
        let record = match frame {
            FrameInput::Bytes(bytes) => self.media.save_upload(user_id, bytes.clone()).await?,
            FrameInput::DataUrl(url) => {
                let bytes = decode_data_url(url).ok_or_else(|| {
                    GenerationError::Invalid(
                        "a frame must be a base64 image data URL (data:image/png;base64,…)".into(),
                    )
                })?;
                self.media.save_upload(user_id, bytes).await?
            }
            FrameInput::Media(id) => {
                let record = self.media.visible(*id, user_id, Role::User).await?;
                if !matches!(record.kind, MediaKind::Image | MediaKind::Upload) {
                    return Err(GenerationError::Invalid("a frame must be an image".into()));
                }
                record
            }
        };
        let bytes = self.media.read_all(&record).await?;
        Ok(format!(
            "data:{};base64,{}",
            record.content_type,
            B64.encode(&bytes)
        ))
    }

    /// The job if it is the user's.
    pub async fn job(&self, user_id: Uuid, id: Uuid) -> Result<VideoJob, GenerationError> {
        match self.store.video_job(id).await? {
            Some(job) if job.user_id == user_id => Ok(job),
            _ => Err(GenerationError::NotFound("job")),
        }
    }

    pub async fn jobs(&self, user_id: Uuid, limit: u32) -> Result<Vec<VideoJob>, GenerationError> {
        Ok(self.store.video_jobs(user_id, limit).await?)
    }

    // ---- the worker ----

    /// Runs the worker on `tracker` until `stop`.
    pub fn start_worker(&self, tracker: &TaskTracker, stop: CancellationToken) {
        let worker = self.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(worker.settings.tick) => worker.tick().await,
                }
            }
        });
    }

    /// Advances every job that is due. Public for tests that step the worker.
    pub async fn tick(&self) {
        let now = Utc::now();
        let lease_until = now + chrono_duration(self.settings.lease);
        let jobs = match self
            .store
            .claim_video_jobs(&self.instance, now, lease_until, CLAIM_BATCH)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim video jobs");
                return;
            }
        };
        for job in jobs {
            if let Err(e) = self.advance(&job).await {
                tracing::warn!(job_id = %job.id, error = %e, "video job step failed; will retry");
            }
        }
    }

    async fn advance(&self, job: &VideoJob) -> Result<(), GenerationError> {
        let now = Utc::now();
        if now - job.created_at > chrono_duration(self.settings.max_job_age) {
            return self
                .conclude(
                    job,
                    JobStatus::Expired,
                    Some("the job took too long and was given up".into()),
                    None,
                    None,
                )
                .await;
        }
        let polled = match self
            .client
            .poll_video(&job.upstream_id, job.polling_url.as_deref())
            .await
        {
            Ok(polled) => polled,
            Err(UpstreamError::Status { status: 404, .. }) => {
                let error = "the upstream no longer knows this job".to_owned();
                return self
                    .conclude(job, JobStatus::Failed, Some(error), None, None)
                    .await;
            }
            Err(e) => {
                // Timeouts and outages are not the job's failure: try again later.
                tracing::info!(job_id = %job.id, error = %e, "video poll failed; rescheduled");
                return self.reschedule(job, job.status).await;
            }
        };
        let cost = polled.usage.as_ref().and_then(|u| u.cost).map(usd_to_nanos);
        match polled.status {
            VideoStatus::Pending => self.reschedule(job, JobStatus::Pending).await,
            VideoStatus::InProgress | VideoStatus::Unknown => {
                self.reschedule(job, JobStatus::InProgress).await
            }
            VideoStatus::Completed => match self.download(job).await {
                Ok(media_id) => {
                    self.conclude(job, JobStatus::Completed, None, Some(media_id), cost)
                        .await
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "video download failed; rescheduled");
                    self.reschedule(job, JobStatus::InProgress).await
                }
            },
            VideoStatus::Failed | VideoStatus::Cancelled | VideoStatus::Expired => {
                let status = match polled.status {
                    VideoStatus::Cancelled => JobStatus::Cancelled,
                    VideoStatus::Expired => JobStatus::Expired,
                    _ => JobStatus::Failed,
                };
                let error = polled
                    .error
                    .unwrap_or_else(|| format!("the upstream reports the job {status}"));
                self.conclude(job, status, Some(error), None, cost).await
            }
        }
    }

    async fn reschedule(&self, job: &VideoJob, status: JobStatus) -> Result<(), GenerationError> {
        let polls = job.polls.saturating_add(1);
        let wait = self
            .settings
            .poll_min_interval
            .saturating_mul(2u32.saturating_pow(job.polls.min(16)))
            .min(self.settings.poll_max_interval);
        let now = Utc::now();
        let progress = JobProgress {
            id: job.id,
            owner: self.instance.clone(),
            status,
            polls,
            next_poll_at: now + chrono_duration(wait),
            now,
        };
        if !self.store.update_video_job(&progress).await? {
            tracing::info!(job_id = %job.id, "lost the lease on a video job; another instance has it");
        }
        Ok(())
    }

    async fn download(&self, job: &VideoJob) -> Result<Uuid, GenerationError> {
        let body = self.client.video_content(&job.upstream_id, 0).await?;
        // Straight from the upstream into storage, a part at a time.
        let chunks = body.map(|chunk| {
            chunk.map_err(|e| {
                GenerationError::Upstream(UpstreamError::Unreachable(format!("video download: {e}")))
            })
        });
        let sniff = |head: &[u8]| {
            sniff_video(head).ok_or_else(|| {
                GenerationError::Upstream(UpstreamError::InvalidResponse(
                    "the video is neither MP4 nor WebM".into(),
                ))
            })
        };
        let record = self
            .media
            .save_stream(
                job.user_id,
                MediaKind::Video,
                sniff,
                chunks,
                Some(job.generation_id),
            )
            .await?;
        Ok(record.id)
    }

    /// Ends the job; whoever wins the compare-and-set records the usage.
    async fn conclude(
        &self,
        job: &VideoJob,
        status: JobStatus,
        error: Option<String>,
        media_id: Option<Uuid>,
        cost_nanousd: Option<i64>,
    ) -> Result<(), GenerationError> {
        let now = Utc::now();
        let outcome = JobOutcome {
            id: job.id,
            status,
            error: error.clone(),
            media_id,
            cost_nanousd,
            now,
        };
        if !self.store.finish_video_job(&outcome).await? {
            tracing::info!(job_id = %job.id, "video job already finished elsewhere");
            return Ok(());
        }
        tracing::info!(job_id = %job.id, status = %status, "video job finished");
        let latency = (now - job.created_at).num_milliseconds();
        self.usage
            .record(GenerationRecord {
                id: job.generation_id,
                user_id: job.user_id,
                kind: GenerationKind::Video,
                model_requested: job.model.clone(),
                model_served: (status == JobStatus::Completed).then(|| job.model.clone()),
                status: if status == JobStatus::Completed {
                    GenerationStatus::Succeeded
                } else {
                    GenerationStatus::Failed
                },
                prompt_tokens: 0,
                completion_tokens: 0,
                cost_nanousd: cost_nanousd.unwrap_or(0),
                latency_ms: u64::try_from(latency).unwrap_or(0),
                error,
                summary: excerpt(&job.prompt, 200),
                conversation_id: None,
                media_ids: media_id.into_iter().collect(),
                created_at: now,
            })
            .await;
        Ok(())
    }
}

/// A rough completion estimate for progress bars: the upstream gives none.
pub fn progress(job: &VideoJob, typical: Duration) -> Option<f64> {
    match job.status {
        JobStatus::Pending => Some(0.05),
        JobStatus::InProgress => {
            let elapsed = (Utc::now() - job.created_at).to_std().unwrap_or_default();
            let share = elapsed.as_secs_f64() / typical.as_secs_f64().max(1.0);
            Some((0.1 + 0.85 * share.min(1.0)).min(0.95))
        }
        JobStatus::Completed => Some(1.0),
        _ => None,
    }
}

fn validate(input: &VideoInput) -> Result<(), GenerationError> {
    let invalid = |m: String| Err(GenerationError::Invalid(m));
    if input.model.trim().is_empty() || input.model.len() > 200 {
        return invalid("model must be a model id".into());
    }
    let has_frame = input.first_frame.is_some();
    if (!has_frame && input.prompt.trim().is_empty()) || input.prompt.chars().count() > 20_000 {
        return invalid("prompt must have 1 to 20000 characters".into());
    }
    if input.last_frame.is_some() && !has_frame {
        return invalid("a last frame needs a first frame".into());
    }
    if input.duration.is_some_and(|d| d == 0 || d > 120) {
        return invalid("duration must be between 1 and 120 seconds".into());
    }
    if let Some(r) = &input.resolution
        && !RESOLUTIONS.contains(&r.as_str())
    {
        return invalid(format!("resolution must be one of {}", RESOLUTIONS.join(", ")));
    }
    if let Some(a) = &input.aspect_ratio
        && !ASPECT_RATIOS.contains(&a.as_str())
    {
        return invalid(format!(
            "aspect_ratio must be one of {}",
            ASPECT_RATIOS.join(", ")
        ));
    }
    Ok(())
}

/// How long the worker takes for a typical job; for [`progress`].
pub fn typical_duration() -> Duration {
    Duration::from_secs(60)
}
