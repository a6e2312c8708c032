//! Media on an S3-compatible server: moto's S3, started on loopback by this
//! harness (installed once into `~/.cache/atelier/moto-venv` from PyPI, pinned in
//! `moto-requirements.txt`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier::config::{MediaSettings, S3Settings, Secret};
use atelier::service::media::{MediaLibrary, Sniffed};
use atelier_store::{MediaKind, Store};
use atelier_store_duckdb::DuckDbStore;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;

pub(crate) const BUCKET: &str = "atelier-media";
const REQUIREMENTS: &str = include_str!("moto-requirements.txt");

/// A moto S3 server on a free loopback port, stopped when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv with moto, created and filled on first use.
fn moto_bin() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let venv = PathBuf::from(home).join(".cache/atelier/moto-venv");
    let marker = venv.join("requirements.txt");
    let bin = venv.join("bin/moto_server");
    if bin.exists() && std::fs::read_to_string(&marker).is_ok_and(|r| r == REQUIREMENTS) {
        return bin;
    }
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .expect("python3");
    assert!(status.success(), "cannot create {}", venv.display());
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(REQUIREMENTS.lines().filter(|l| !l.trim().is_empty()))
        .status()
        .expect("pip");
    assert!(status.success(), "cannot install moto");
    std::fs::write(&marker, REQUIREMENTS).expect("marker");
    bin
}

pub(crate) async fn start_moto() -> Moto {
    let bin = tokio::task::spawn_blocking(moto_bin).await.expect("install moto");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if http.get(&moto.endpoint).send().await.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // moto takes unsigned requests, so the bucket is one plain PUT.
    let created = http
        .put(format!("{}/{BUCKET}", moto.endpoint))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success(), "{}", created.status());
    moto
}

fn s3_settings(moto: &Moto) -> S3Settings {
    S3Settings {
        bucket: Some(BUCKET.into()),
        endpoint: Some(moto.endpoint.clone()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some(Secret::new("testing")),
        prefix: "deployment/".into(),
        ..S3Settings::default()
    }
}

/// Keys in the bucket, from S3's own listing.
async fn bucket_keys(moto: &Moto) -> String {
    reqwest::get(format!("{}/{BUCKET}?list-type=2", moto.endpoint))
        .await
        .expect("list")
        .text()
        .await
        .expect("listing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_media_round_trips_through_the_bucket() {
    let moto = start_moto().await;
    let s3 = s3_settings(&moto);
    let app = TestApp::spawn_with(|settings| settings.media.s3 = s3).await;
    let user = app.user().await;

    let url = app
        .generate_image(&user.access, "mock/image", "a lighthouse")
        .await;
    let response = app.media(&url, &user.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let png = response.bytes().await.expect("bytes");
    png::Decoder::new(std::io::Cursor::new(png.to_vec()))
        .read_info()
        .expect("a valid PNG back from the bucket");

    let accepted = app
        .post(
            "/generate/video",
            Some(&user.access),
            json!({"model": "mock/video", "prompt": "waves", "duration": 4, "resolution": "720p", "aspect_ratio": "16:9"}),
        )
        .await
        .expect(StatusCode::ACCEPTED)
        .body;
    let job = app
        .wait_for_job(
            &user.access,
            accepted["job_id"].as_str().expect("job"),
            Duration::from_secs(20),
        )
        .await;
    let video_url = job["video"]["url"].as_str().expect("video url");
    let ranged = app
        .client
        .get(app.url(video_url))
        .bearer_auth(&user.access)
        .header("Range", "bytes=0-7")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&ranged.bytes().await.expect("bytes")[4..8], b"ftyp");

    let listing = bucket_keys(&moto).await;
    let under_prefix = listing
        .matches(&format!("<Key>deployment/media/{}/", user.id))
        .count();
    assert_eq!(
        under_prefix, 2,
        "the image and the video, under the prefix: {listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_media_streams_in_parts_and_reads_back_whole() {
    let moto = start_moto().await;
    let settings = MediaSettings {
        s3: s3_settings(&moto),
        part_size_bytes: 5 * 1024 * 1024,
        ..MediaSettings::default()
    };
    let (objects, _) = atelier::app::media_objects(&settings).expect("the bucket");
    let dir = tempfile::tempdir().expect("temporary folder");
    let (store, _) = DuckDbStore::open(dir.path().join("media.duckdb"))
        .await
        .expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let library = MediaLibrary::new(Arc::clone(&objects), Arc::clone(&store), 1 << 20, 5 * 1024 * 1024);

    // 12 MiB made on the fly, 64 KiB at a time: the source is never whole in memory.
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 192;
    let chunk = |i: usize| {
        let mut bytes = vec![(i % 251) as u8; CHUNK];
        if i == 0 {
            bytes[..12].copy_from_slice(b"\0\0\0\x18ftypmp42");
        }
        Bytes::from(bytes)
    };
    let mut expected = Sha256::new();
    for i in 0..CHUNKS {
        expected.update(chunk(i));
    }
    let stream = futures_util::stream::iter(0..CHUNKS).map(move |i| Ok(chunk(i)));
    let sniff = |_: &[u8]| {
        Ok(Sniffed {
            content_type: "video/mp4",
            extension: "mp4",
        })
    };
    let user = uuid::Uuid::now_v7();
    let record = library
        .save_stream(user, MediaKind::Video, sniff, stream, None)
        .await
        .expect("saved");
    assert_eq!(record.size_bytes, (CHUNK * CHUNKS) as u64);

    // S3 names a multipart object's ETag after its part count: 12 MiB in 5 MiB parts is 3.
    let meta = objects
        .head(&object_store::path::Path::from(record.storage_key.as_str()))
        .await
        .expect("head");
    assert!(
        meta.e_tag
            .as_deref()
            .is_some_and(|t| t.trim_matches('"').ends_with("-3")),
        "uploaded in 3 parts: {:?}",
        meta.e_tag
    );

    let read = library.open(&record, None).await.expect("open");
    let mut body = read.into_stream();
    let mut actual = Sha256::new();
    let mut total = 0;
    while let Some(piece) = body.next().await {
        let piece = piece.expect("piece");
        total += piece.len();
        actual.update(&piece);
    }
    assert_eq!(total, CHUNK * CHUNKS);
    assert_eq!(actual.finalize(), expected.finalize(), "the same bytes back");

    // A stream that breaks leaves nothing behind.
    let broken = futures_util::stream::iter(0..CHUNKS).map(move |i| {
        if i == 100 {
            Err(atelier::service::generation_error::GenerationError::Internal(
                anyhow::anyhow!("cut"),
            ))
        } else {
            Ok(chunk(i))
        }
    });
    let before = bucket_keys(&moto).await.matches("<Key>").count();
    assert!(
        library
            .save_stream(user, MediaKind::Video, sniff, broken, None)
            .await
            .is_err()
    );
    assert_eq!(bucket_keys(&moto).await.matches("<Key>").count(), before);
}
