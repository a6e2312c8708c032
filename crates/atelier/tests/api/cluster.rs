//! Several instances, one truth: two `atelier serve` processes on one fresh
//! PostgreSQL database (the machine's server, see
//! `atelier_store_postgres::testing`), one mock upstream, a client alternating
//! between them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atelier_mock_upstream::{MockConfig, MockUpstream};
use atelier_store_postgres::testing::FreshDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Reply, send_to};
use crate::process::{BIN, Server, start};
use crate::s3::{BUCKET, Moto, start_moto};

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "cluster-admin-orchid-kettle";
const PASSWORD: &str = "cluster-user-lantern-meadow";
/// How soon a change on one instance must be seen by the other.
const PROPAGATION: Duration = Duration::from_secs(1);

struct Cluster {
    db: FreshDatabase,
    mock: MockUpstream,
    media: tempfile::TempDir,
    /// The instances' shared bucket, when the test wants one; else a shared folder.
    bucket: Option<Moto>,
    http: reqwest::Client,
}

impl Cluster {
    async fn new(mock: MockConfig) -> Self {
        Cluster {
            db: FreshDatabase::create()
                .await
                .expect("a fresh PostgreSQL database"),
            mock: MockUpstream::start(mock).await.expect("mock upstream"),
            media: tempfile::tempdir().expect("media folder"),
            bucket: None,
            http: reqwest::Client::new(),
        }
    }

    /// Media in one S3-compatible bucket (moto on loopback), as in production.
    async fn with_bucket(mut self) -> Self {
        self.bucket = Some(start_moto().await);
        self
    }

    /// Starts one more instance on the shared database. No JWT secret is configured:
    /// the instances share the one stored in the database.
    fn instance(&self, extra_env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ATELIER_DATABASE_URL", self.db.url())
            // Small pools: parallel tests must stay under the server's max_connections.
            .env("ATELIER_DATABASE_MAX_CONNECTIONS", "4")
            .env("ATELIER_BIND", "127.0.0.1:0")
            .env("ATELIER_LOG_FORMAT", "json")
            .env("ATELIER_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ATELIER_UPSTREAM__BASE_URL", self.mock.base_url())
            .env("ATELIER_UPSTREAM__API_KEY", self.mock.api_key())
            .env("ATELIER_MEDIA__DIR", self.media.path())
            // Each instance reads the others' usage from the database; write it soon.
            .env("ATELIER_RUNTIME__USAGE_WRITE_INTERVAL", "100ms")
            .env("ATELIER_VIDEO__TICK", "50ms")
            .env("ATELIER_VIDEO__POLL_MIN_INTERVAL", "50ms")
            .env("ATELIER_VIDEO__POLL_MAX_INTERVAL", "100ms")
            .stdin(Stdio::null());
        if let Some(moto) = &self.bucket {
            cmd.env("ATELIER_MEDIA__S3__BUCKET", BUCKET)
                .env("ATELIER_MEDIA__S3__ENDPOINT", &moto.endpoint)
                .env("ATELIER_MEDIA__S3__ACCESS_KEY_ID", "testing")
                .env("ATELIER_MEDIA__S3__SECRET_ACCESS_KEY", "testing");
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        start(cmd)
    }

    async fn send(
        &self,
        on: &Server,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        send_to(&self.http, method, on.url(path), token, body).await
    }

    async fn post(&self, on: &Server, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(on, Method::POST, path, token, Some(body)).await
    }

    async fn get(&self, on: &Server, path: &str, token: &str) -> Reply {
        self.send(on, Method::GET, path, Some(token), None).await
    }

    /// Access and refresh token of a new session.
    async fn login(&self, on: &Server, email: &str, password: &str) -> (String, String) {
        let reply = self
            .post(
                on,
                "/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await
            .expect(StatusCode::OK);
        (
            reply.body["access_token"].as_str().expect("access").to_owned(),
            reply.body["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    }

    /// Registers `email` and returns its id.
    async fn register(&self, on: &Server, email: &str) -> String {
        let reply = self
            .post(
                on,
                "/auth/register",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await
            .expect(StatusCode::CREATED);
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Polls `on` until `path` answers `status` with the token; returns how long it took.
    async fn until_status(&self, on: &Server, path: &str, token: &str, status: StatusCode) -> Duration {
        let started = Instant::now();
        loop {
            let reply = self.get(on, path, token).await;
            if reply.status == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} still answers {} instead of {status}: {}",
                reply.status,
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pg(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(self.db.url())
            .await
            .expect("connect to the test database")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_and_reuse_detection_hold_across_instances() {
    let cluster = Cluster::new(MockConfig::default()).await;
    let a = cluster.instance(&[]);
    let b = cluster.instance(&[]);
    cluster.register(&a, "ada@example.com").await;

    let (access, first) = cluster.login(&b, "ada@example.com", PASSWORD).await;
    cluster.get(&a, "/users/me", &access).await.expect(StatusCode::OK);

    let rotated = cluster
        .post(&a, "/auth/refresh", None, json!({"refresh_token": first}))
        .await
        .expect(StatusCode::OK);
    let second = rotated.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();

    // The replay goes to the other instance, which has never seen this session.
    cluster
        .post(&b, "/auth/refresh", None, json!({"refresh_token": first}))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    cluster
        .post(&a, "/auth/refresh", None, json!({"refresh_token": second}))
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_on_one_instance_reach_the_other_within_a_second() {
    let cluster = Cluster::new(MockConfig::default()).await;
    let a = cluster.instance(&[]);
    let b = cluster.instance(&[]);
    let (admin, _) = cluster.login(&a, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let id = cluster.register(&a, "bob@example.com").await;

    // Role change on A: B stops honouring the older token.
    let (before_role, _) = cluster.login(&a, "bob@example.com", PASSWORD).await;
    cluster
        .get(&b, "/users/me", &before_role)
        .await
        .expect(StatusCode::OK);
    cluster
        .send(
            &a,
            Method::PUT,
            &format!("/users/{id}/role"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await
        .expect(StatusCode::OK);
    let took = cluster
        .until_status(&b, "/users/me", &before_role, StatusCode::UNAUTHORIZED)
        .await;
    assert!(took <= PROPAGATION, "role change seen after {took:?}");

    // Logout on A ends the session's access tokens on B.
    let (session, refresh) = cluster.login(&b, "bob@example.com", PASSWORD).await;
    cluster
        .get(&b, "/users/me", &session)
        .await
        .expect(StatusCode::OK);
    cluster
        .post(&a, "/auth/logout", None, json!({"refresh_token": refresh}))
        .await
        .expect(StatusCode::NO_CONTENT);
    let took = cluster
        .until_status(&b, "/users/me", &session, StatusCode::UNAUTHORIZED)
        .await;
    assert!(took <= PROPAGATION, "logout seen after {took:?}");

    // Password change on B: A stops honouring tokens issued before it.
    let (before_password, _) = cluster.login(&a, "bob@example.com", PASSWORD).await;
    cluster
        .get(&a, "/users/me", &before_password)
        .await
        .expect(StatusCode::OK);
    let new_password = "cluster-user-harbour-violet";
    cluster
        .send(
            &b,
            Method::PUT,
            "/users/me",
            Some(&before_password),
            Some(json!({"current_password": PASSWORD, "new_password": new_password})),
        )
        .await
        .expect(StatusCode::OK);
    let took = cluster
        .until_status(&a, "/users/me", &before_password, StatusCode::UNAUTHORIZED)
        .await;
    assert!(took <= PROPAGATION, "password change seen after {took:?}");

    // An API key made on A works on B at once; revoked on B, it stops on A.
    let (fresh, _) = cluster.login(&a, "bob@example.com", new_password).await;
    let created = cluster
        .post(&a, "/users/me/api-keys", Some(&fresh), json!({"name": "cluster"}))
        .await
        .expect(StatusCode::CREATED);
    let (key_id, key) = (
        created.body["id"].as_str().expect("id").to_owned(),
        created.body["key"].as_str().expect("key").to_owned(),
    );
    let took = cluster.until_status(&b, "/v1/models", &key, StatusCode::OK).await;
    assert!(
        took <= PROPAGATION,
        "new key usable on the other instance after {took:?}"
    );
    cluster
        .send(
            &b,
            Method::DELETE,
            &format!("/users/me/api-keys/{key_id}"),
            Some(&fresh),
            None,
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    let took = cluster
        .until_status(&a, "/v1/models", &key, StatusCode::UNAUTHORIZED)
        .await;
    assert!(took <= PROPAGATION, "key revocation seen after {took:?}");

    // Deletion on B: A rejects the user's tokens.
    cluster
        .send(&b, Method::DELETE, &format!("/users/{id}"), Some(&admin), None)
        .await
        .expect(StatusCode::NO_CONTENT);
    let took = cluster
        .until_status(&a, "/users/me", &fresh, StatusCode::UNAUTHORIZED)
        .await;
    assert!(took <= PROPAGATION, "deletion seen after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_from_both_instances_is_complete_and_counted_once() {
    let cluster = Cluster::new(MockConfig::default()).await;
    let a = cluster.instance(&[]);
    let b = cluster.instance(&[]);
    cluster.register(&a, "cy@example.com").await;
    let (token, _) = cluster.login(&a, "cy@example.com", PASSWORD).await;

    const REQUESTS: usize = 12;
    for i in 0..REQUESTS {
        let on = if i % 2 == 0 { &a } else { &b };
        cluster
            .post(
                on,
                "/v1/chat/completions",
                Some(&token),
                json!({"model": "mock/chat", "messages": [{"role": "user", "content": format!("hello {i}")}]}),
            )
            .await
            .expect(StatusCode::OK);
    }
    // Each instance writes its records in batches, a few hundred ms apart.
    let started = Instant::now();
    loop {
        let history = cluster
            .get(&b, "/generations?kind=chat&limit=100", &token)
            .await
            .expect(StatusCode::OK);
        let n = history.body["generations"].as_array().map_or(0, Vec::len);
        if n == REQUESTS {
            break;
        }
        assert!(n < REQUESTS, "{n} records for {REQUESTS} requests: counted twice");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "only {n} of {REQUESTS} records arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut db = cluster.pg().await;
    let (rows, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM generations")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!((rows, distinct), (REQUESTS as i64, REQUESTS as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_job_survives_its_instance_being_killed_and_is_charged_once() {
    // Every upstream answer takes 400 ms, so a poll is in flight long enough to kill
    // the instance in the middle of it.
    let cluster = Cluster::new(MockConfig {
        latency: Duration::from_millis(400),
        video_polls_per_state: 2,
        ..MockConfig::default()
    })
    .await
    .with_bucket()
    .await;
    let lease = [("ATELIER_VIDEO__LEASE", "2s")];
    let mut a = cluster.instance(&lease);
    cluster.register(&a, "dee@example.com").await;
    let (token, _) = cluster.login(&a, "dee@example.com", PASSWORD).await;
    let accepted = cluster
        .post(
            &a,
            "/generate/video",
            Some(&token),
            json!({"model": "mock/video", "prompt": "waves on a beach", "duration": 4, "resolution": "720p", "aspect_ratio": "16:9"}),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let job_id = accepted.body["job_id"].as_str().expect("job id").to_owned();
    let job_uuid: uuid::Uuid = job_id.parse().expect("uuid");

    // Wait until A holds the lease (a poll is in flight), then kill it outright.
    let mut db = cluster.pg().await;
    let started = Instant::now();
    loop {
        let owner: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM video_jobs WHERE id = $1")
            .bind(job_uuid)
            .fetch_one(&mut db)
            .await
            .expect("the job row");
        if owner.is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "A never leased the job:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill_hard();

    let b = cluster.instance(&lease);
    let started = Instant::now();
    let job = loop {
        let job = cluster
            .get(&b, &format!("/generate/jobs/{job_id}"), &token)
            .await
            .expect(StatusCode::OK);
        if job.body["status"] == "completed" {
            break job.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job did not complete on B: {}\n{}",
            job.text,
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The video went to the shared bucket, so any instance serves it.
    let url = job["video"]["url"].as_str().expect("the video's URL");
    let video = cluster.get(&b, url, &token).await.expect(StatusCode::OK);
    assert_eq!(&video.text.as_bytes()[4..8], b"ftyp");
    let media_dir_entries = std::fs::read_dir(cluster.media.path()).map_or(0, |d| d.count());
    assert_eq!(media_dir_entries, 0, "nothing in the local folder");

    // One usage record, with the upstream's cost.
    let started = Instant::now();
    let (records, cost): (i64, Option<i64>) = loop {
        let row: (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), sum(cost_nanousd)::bigint FROM generations WHERE kind = 'video'",
        )
        .fetch_one(&mut db)
        .await
        .expect("usage");
        if row.0 > 0 || started.elapsed() > Duration::from_secs(5) {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(records, 1, "the video is recorded exactly once");
    assert!(cost.is_some_and(|c| c > 0), "with its cost: {cost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_counts_requests_made_on_either_instance() {
    let cluster = Cluster::new(MockConfig::default()).await;
    let a = cluster.instance(&[]);
    let b = cluster.instance(&[]);
    let (admin, _) = cluster.login(&a, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let id = cluster.register(&a, "eve@example.com").await;
    cluster
        .send(
            &b,
            Method::PUT,
            &format!("/users/{id}/budget"),
            Some(&admin),
            Some(json!({"daily_requests": 3})),
        )
        .await
        .expect(StatusCode::OK);
    let (token, _) = cluster.login(&a, "eve@example.com", PASSWORD).await;
    let chat = json!({"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]});

    // Three requests on A use up the day; B, which served none, learns it.
    for _ in 0..3 {
        cluster
            .post(&a, "/v1/chat/completions", Some(&token), chat.clone())
            .await
            .expect(StatusCode::OK);
    }
    // B takes in other instances' spend every 5 s; give it that and A's usage flush.
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster
        .post(&b, "/v1/chat/completions", Some(&token), chat.clone())
        .await
        .expect_error(StatusCode::PAYMENT_REQUIRED, "budget_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_changes_a_role_beside_running_instances() {
    let cluster = Cluster::new(MockConfig::default()).await;
    let a = cluster.instance(&[]);
    cluster.register(&a, "fay@example.com").await;
    let (token, _) = cluster.login(&a, "fay@example.com", PASSWORD).await;
    cluster.get(&a, "/users/me", &token).await.expect(StatusCode::OK);

    let out = Command::new(BIN)
        .args(["user", "set-role", "fay@example.com", "--role", "admin"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ATELIER_DATABASE_URL", cluster.db.url())
        .env("ATELIER_DATABASE_MAX_CONNECTIONS", "2")
        .stdin(Stdio::null())
        .output()
        .expect("run atelier user set-role");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = cluster
        .until_status(&a, "/users/me", &token, StatusCode::UNAUTHORIZED)
        .await;
    assert!(took <= PROPAGATION, "the CLI's role change seen after {took:?}");
    let (fresh, _) = cluster.login(&a, "fay@example.com", PASSWORD).await;
    let me = cluster.get(&a, "/users/me", &fresh).await.expect(StatusCode::OK);
    assert_eq!(me.body["role"], "admin");
}
