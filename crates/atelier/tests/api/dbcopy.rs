//! `atelier db copy`: a populated DuckDB deployment moved into an empty PostgreSQL
//! database, then served from there.

use std::process::{Command, Stdio};

use atelier_store_postgres::testing::FreshDatabase;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, read};
use crate::process::{BIN, start};

fn db_copy(from: &str, to: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["db", "copy", "--from", from, "--to", to])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("run atelier db copy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duckdb_deployment_moves_to_postgres_and_works_there() {
    // An embedded deployment with a user, a conversation, an image and an API key.
    let mut app = TestApp::spawn().await;
    let user = app.user().await;
    app.post(
        "/ai/chat",
        Some(&user.access),
        json!({"model": "mock/chat", "messages": [{"role": "user", "content": "remember me"}]}),
    )
    .await
    .expect(StatusCode::OK);
    let image_url = app
        .generate_image(&user.access, "mock/image", "a lighthouse")
        .await;
    let (_, key) = app.api_key(&user, json!({"name": "moved"})).await;
    app.stop().await;

    let from = format!("duckdb://{}", app.db_path().display());
    let db = FreshDatabase::create()
        .await
        .expect("a fresh PostgreSQL database");
    let copied = db_copy(&from, db.url(), &[]);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let report = text(&copied.stdout);
    assert!(
        report.contains("users") && report.contains("generations"),
        "{report}"
    );

    // Again: the target is not empty any more, so it is refused, and nothing changes.
    let again = db_copy(&from, db.url(), &[]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );
    // Unless told to replace what is there.
    let replaced = db_copy(&from, db.url(), &["--replace"]);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    assert_eq!(text(&replaced.stdout), report, "the same rows, once");

    // A server on PostgreSQL with the same media folder serves the same deployment.
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ATELIER_DATABASE_URL", db.url())
        .env("ATELIER_DATABASE_MAX_CONNECTIONS", "4")
        .env("ATELIER_BIND", "127.0.0.1:0")
        .env("ATELIER_LOG_FORMAT", "json")
        .env("ATELIER_UPSTREAM__BASE_URL", app.mock.base_url())
        .env("ATELIER_UPSTREAM__API_KEY", app.mock.api_key())
        .env("ATELIER_MEDIA__DIR", &app.settings.media.dir);
    let server = start(cmd);
    let http = reqwest::Client::new();
    let login = read(
        http.post(server.url("/auth/login"))
            .json(&json!({"email": user.email, "password": user.password}))
            .send()
            .await
            .expect("login"),
    )
    .await
    .expect(StatusCode::OK);
    let token = login.body["access_token"].as_str().expect("token").to_owned();

    let get = |path: String| {
        let request = http.get(server.url(&path)).bearer_auth(&token);
        async move { read(request.send().await.expect("request")).await }
    };
    let conversations = get("/ai/conversations".into()).await.expect(StatusCode::OK).body;
    assert_eq!(conversations["conversations"].as_array().map(Vec::len), Some(1));
    let history = get("/generations".into()).await.expect(StatusCode::OK).body;
    let kinds: Vec<&str> = history["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .filter_map(|g| g["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"chat") && kinds.contains(&"image"), "{kinds:?}");
    let media = http
        .get(server.url(&image_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("media");
    assert_eq!(media.status(), StatusCode::OK);
    assert_eq!(media.headers()["content-type"], "image/png");

    let with_key = http
        .get(server.url("/v1/models"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("models");
    assert_eq!(with_key.status(), StatusCode::OK, "the API key moved too");
}

#[tokio::test]
async fn db_copy_refuses_what_it_cannot_do() {
    let missing = db_copy(
        "duckdb:///nonexistent/atelier.duckdb",
        "postgres://postgres@127.0.0.1:5432/postgres",
        &[],
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("no database file"),
        "{}",
        text(&missing.stderr)
    );

    let backwards = db_copy("postgres://postgres@127.0.0.1/x", "duckdb://./x.duckdb", &[]);
    assert!(!backwards.status.success());
    assert!(
        text(&backwards.stderr).contains("--from duckdb://"),
        "{}",
        text(&backwards.stderr)
    );
}
