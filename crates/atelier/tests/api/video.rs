//! Video jobs end to end: submit, the background worker, download into media,
//! restarts in the middle, image-to-video inputs, and media byte ranges.

use std::time::Duration;

use atelier_mock_upstream::MockConfig;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const WAIT: Duration = Duration::from_secs(20);

fn video(model: &str) -> Value {
    json!({"model": model, "prompt": "waves on a beach", "duration": 4, "resolution": "720p", "aspect_ratio": "16:9"})
}

#[tokio::test]
async fn a_text_to_video_job_completes_and_its_video_is_served_with_ranges() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let accepted = app
        .post("/generate/video", Some(&user.access), video("mock/video"))
        .await
        .expect(StatusCode::ACCEPTED)
        .body;
    assert_eq!(accepted["status"], "pending");
    let job_id = accepted["job_id"].as_str().expect("job id").to_owned();

    let done = app.wait_for_job(&user.access, &job_id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["cost_usd"], 0.2, "4 s at the mock's 0.05 USD/s");
    let url = done["video"]["url"].as_str().expect("video url");

    let full = app.media(url, &user.access).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["content-type"], "video/mp4");
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let bytes = full.bytes().await.expect("bytes");
    assert_eq!(&bytes[4..8], b"ftyp");

    let part = app
        .client
        .get(app.url(url))
        .bearer_auth(&user.access)
        .header("range", "bytes=4-11")
        .send()
        .await
        .expect("sent");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 4-11/{}", bytes.len()).as_str()
    );
    assert_eq!(part.bytes().await.expect("bytes").as_ref(), &bytes[4..12]);
    let tail = app
        .client
        .get(app.url(url))
        .bearer_auth(&user.access)
        .header("range", "bytes=-10")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        tail.bytes().await.expect("bytes").as_ref(),
        &bytes[bytes.len() - 10..]
    );
    let beyond = app
        .client
        .get(app.url(url))
        .bearer_auth(&user.access)
        .header("range", format!("bytes={}-", bytes.len()))
        .send()
        .await
        .expect("sent");
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Cost recorded once, in the history, with the video.
    let history = app.get("/generations?kind=video", Some(&user.access)).await.body;
    let records = history["generations"].as_array().expect("list");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["cost_usd"], 0.2);
    assert_eq!(records[0]["media"][0]["url"], url);
    assert_eq!(
        app.get("/generate/jobs", Some(&user.access)).await.body["jobs"][0]["job_id"],
        job_id.as_str()
    );

    // Someone else's job and video do not exist for them.
    let other = app.user().await;
    app.get(&format!("/generate/jobs/{job_id}"), Some(&other.access))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.media(url, &other.access).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/generate/jobs", Some(&other.access)).await.body["jobs"],
        json!([])
    );
}

#[tokio::test]
async fn a_failing_job_ends_failed_with_the_upstream_reason() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let accepted = app
        .post("/generate/video", Some(&user.access), video("mock/video-fail"))
        .await
        .expect(StatusCode::ACCEPTED)
        .body;
    let done = app
        .wait_for_job(&user.access, accepted["job_id"].as_str().expect("id"), WAIT)
        .await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"].as_str().is_some_and(|e| e.contains("on purpose")),
        "{done}"
    );
    assert!(done["video"].is_null() && done["progress"].is_null());
    let history = app.get("/generations?kind=video", Some(&user.access)).await.body;
    assert_eq!(history["generations"][0]["status"], "failed");
}

#[tokio::test]
async fn invalid_video_requests_are_refused_before_or_by_the_upstream() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());
    let mut bad = video("mock/video");
    bad["resolution"] = json!("8K");
    app.post("/generate/video", token, bad)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let mut unsupported = video("mock/video");
    unsupported["duration"] = json!(5);
    let refused = app
        .post("/generate/video", token, unsupported)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        refused.text.contains("duration"),
        "the upstream's reason: {}",
        refused.text
    );
    app.post("/generate/video", token, video("mock/error-402"))
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "upstream_payment_required");
    assert_eq!(
        app.get("/generate/jobs", token).await.body["jobs"],
        json!([]),
        "nothing was accepted"
    );
}

#[tokio::test]
async fn a_job_survives_a_restart_of_atelier() {
    // Slow jobs: each state lasts several polls.
    let mock = MockConfig {
        video_polls_per_state: 4,
        ..MockConfig::default()
    };
    let app = TestApp::spawn_custom(mock, |s| {
        s.video.poll_min_interval = Duration::from_millis(200);
        s.video.poll_max_interval = Duration::from_millis(200);
    })
    .await;
    let user = app.user().await;
    let accepted = app
        .post("/generate/video", Some(&user.access), video("mock/video"))
        .await
        .expect(StatusCode::ACCEPTED)
        .body;
    let job_id = accepted["job_id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let midway = app
        .get(&format!("/generate/jobs/{job_id}"), Some(&user.access))
        .await
        .body;
    assert!(
        matches!(midway["status"].as_str(), Some("pending" | "in_progress")),
        "still running: {midway}"
    );

    let app = app.restart().await;
    let done = app.wait_for_job(&user.access, &job_id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    let history = app.get("/generations?kind=video", Some(&user.access)).await.body;
    assert_eq!(
        history["generations"].as_array().map(Vec::len),
        Some(1),
        "cost recorded once"
    );
}

fn data_url(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

#[tokio::test]
async fn image_to_video_takes_uploads_data_urls_and_own_media() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let token = Some(user.access.as_str());
    let image = app
        .post(
            "/generate/image",
            token,
            json!({"model": "mock/image", "prompt": "a red fox"}),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    let image_id = image["images"][0]["id"].as_str().expect("id").to_owned();
    let png = app
        .media(image["images"][0]["url"].as_str().expect("url"), &user.access)
        .await
        .bytes()
        .await
        .expect("png");

    // 1. The id of one's own image.
    let by_id = app
        .post(
            "/generate/video/from-image",
            token,
            json!({"model": "mock/video", "prompt": "the fox runs", "image_media_id": image_id}),
        )
        .await
        .expect(StatusCode::ACCEPTED)
        .body;
    let sent = app.mock.last_body("POST /api/v1/videos").expect("submitted");
    assert_eq!(sent["frame_images"][0]["frame_type"], "first_frame");
    assert_eq!(
        sent["frame_images"][0]["image_url"]["url"],
        data_url(&png).as_str(),
        "the frame goes upstream as a data URL"
    );

    // 2. A data URL, with a last frame.
    app.post(
        "/generate/video/from-image",
        token,
        json!({"model": "mock/video", "image": data_url(&png), "last_image_media_id": image_id}),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let sent = app.mock.last_body("POST /api/v1/videos").expect("submitted");
    assert_eq!(sent["frame_images"][1]["frame_type"], "last_frame");
    assert!(sent.get("prompt").is_none(), "an empty prompt is left out");

    // 3. A multipart upload.
    let form = reqwest::multipart::Form::new()
        .text("model", "mock/video")
        .text("prompt", "from an upload")
        .text("duration", "6")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png.to_vec()).file_name("frame.png"),
        );
    let response = app
        .client
        .post(app.url("/generate/video/from-image"))
        .bearer_auth(&user.access)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let uploaded = crate::helpers::read(response)
        .await
        .expect(StatusCode::ACCEPTED)
        .body;
    let done = app
        .wait_for_job(&user.access, uploaded["job_id"].as_str().expect("id"), WAIT)
        .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        app.mock.last_body("POST /api/v1/videos").expect("sent")["duration"],
        6
    );
    app.wait_for_job(&user.access, by_id["job_id"].as_str().expect("id"), WAIT)
        .await;

    // Refusals: not an image, someone else's media, no frame, a URL, too big.
    let not_image = reqwest::multipart::Form::new().text("model", "mock/video").part(
        "image",
        reqwest::multipart::Part::bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec())
            .file_name("x.png"),
    );
    let response = app
        .client
        .post(app.url("/generate/video/from-image"))
        .bearer_auth(&user.access)
        .multipart(not_image)
        .send()
        .await
        .expect("sent");
    crate::helpers::read(response)
        .await
        .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media");

    let other = app.user().await;
    app.post(
        "/generate/video/from-image",
        Some(&other.access),
        json!({"model": "mock/video", "image_media_id": image_id}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    app.post(
        "/generate/video/from-image",
        token,
        json!({"model": "mock/video", "prompt": "x"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    app.post(
        "/generate/video/from-image",
        token,
        json!({"model": "mock/video", "image": "https://example.com/cat.png"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    let small = TestApp::spawn_with(|s| s.media.max_upload_bytes = 100).await;
    let user = small.user().await;
    let form = reqwest::multipart::Form::new().text("model", "mock/video").part(
        "image",
        reqwest::multipart::Part::bytes(png.to_vec()).file_name("frame.png"),
    );
    let response = small
        .client
        .post(small.url("/generate/video/from-image"))
        .bearer_auth(&user.access)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    crate::helpers::read(response)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large");
}
