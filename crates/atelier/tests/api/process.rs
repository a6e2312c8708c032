//! The `atelier` binary as an operator runs it: start-up, the DuckDB file lock,
//! signals, the CLI, and what the logs may contain.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_atelier");
const ADMIN_PASSWORD: &str = "process-admin-orchid-kettle";
const JWT_SECRET: &str = "process-test-signing-key-abcdefghijklmnop";

/// A temporary working folder with a database in it; commands run inside it.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("atelier.duckdb")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "ATELIER_DATABASE_URL",
                format!("duckdb://{}", self.db().display()),
            )
            .env("ATELIER_BIND", "127.0.0.1:0")
            .env("ATELIER_JWT_SECRET", JWT_SECRET);
        cmd
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn atelier");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        wait_output(child, Duration::from_secs(60))
    }

    fn serve(&self, extra_env: &[(&str, &str)]) -> Server {
        let mut cmd = self.command(&["serve"]);
        cmd.env("ATELIER_LOG_FORMAT", "json")
            .env("ATELIER_ADMIN_EMAIL", "root@example.com")
            .env("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        start(cmd)
    }
}

/// Spawns a server command and waits until it listens.
pub(crate) fn start(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn atelier serve");
    let log = Arc::new(Mutex::new(String::new()));
    let reader = BufReader::new(child.stderr.take().expect("stderr"));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let mut log = sink.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let started = Instant::now();
    let addr = loop {
        if let Some(addr) = listening_address(&log.lock().expect("log lock")) {
            break addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "atelier exited with {status} before listening:\n{}",
                log.lock().expect("log")
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "atelier did not start:\n{}",
            log.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Server {
        child,
        log,
        base: format!("http://{addr}"),
    }
}

pub(crate) struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    base: String,
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited successfully.
    fn terminate(&mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.success();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub(crate) fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_address(log: &str) -> Option<String> {
    let start = log.find("listening on http://")? + "listening on http://".len();
    let rest = &log[start..];
    let end = rest.find([' ', '"'])?;
    Some(rest[..end].to_owned())
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(started.elapsed() < limit, "command did not finish in {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_second_process_on_the_same_file_fails_at_once_naming_it() {
    let work = Workdir::new();
    let _server = work.serve(&[]);
    let started = Instant::now();
    let out = work.run(&["migrate"], None);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed at once, not after a wait"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&work.db().display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// Logs in as the bootstrapped admin; returns the access token.
fn admin_login(server: &Server) -> String {
    let tokens: serde_json::Value = reqwest::blocking::Client::new()
        .post(server.url("/auth/login"))
        .json(&json!({"email": "root@example.com", "password": ADMIN_PASSWORD}))
        .send()
        .expect("login")
        .json()
        .expect("json");
    tokens["access_token"].as_str().expect("access token").to_owned()
}

#[test]
fn sigterm_stops_gracefully_and_releases_the_file() {
    // Audit rows are written in batches; with a minute between writes the
    // login's row is still waiting when SIGTERM comes, and must be written then.
    let slow_writes = [("ATELIER_RUNTIME__USAGE_WRITE_INTERVAL", "1min")];
    let work = Workdir::new();
    let mut server = work.serve(&slow_writes);
    let health = reqwest::blocking::get(server.url("/healthz")).expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    admin_login(&server);
    assert!(server.terminate(), "clean exit:\n{}", server.log());
    let log = server.log();
    assert!(log.contains("shutting down") && log.contains("stopped"), "{log}");
    assert!(Path::new(&work.db()).exists());

    let out = work.run(&["user", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("root@example.com"),
        "the bootstrapped admin persisted"
    );

    // Both logins count: the one written at shutdown, and this one, still
    // waiting, which the statistics write before they read.
    let server = work.serve(&slow_writes);
    let access = admin_login(&server);
    let stats: serde_json::Value = reqwest::blocking::Client::new()
        .get(server.url("/admin/stats"))
        .bearer_auth(access)
        .send()
        .expect("stats")
        .json()
        .expect("json");
    assert_eq!(
        stats["logins_24h"],
        json!({"succeeded": 2, "failed": 0}),
        "{stats}"
    );
}

#[test]
fn startup_prints_one_summary_line_per_subsystem() {
    let work = Workdir::new();
    let mut server = work.serve(&[]);
    assert!(server.terminate());
    let log = server.log();
    for subsystem in [
        "config: ",
        "store: duckdb://",
        "auth: signing key",
        "admin: created root@example.com",
        "http: listening on",
    ] {
        assert!(log.contains(subsystem), "missing {subsystem:?} in:\n{log}");
    }
    assert!(
        !log.contains(JWT_SECRET) && !log.contains(ADMIN_PASSWORD),
        "a secret was logged:\n{log}"
    );

    // A restart leaves the existing admin alone.
    let mut again = work.serve(&[]);
    assert!(again.terminate());
    assert!(
        again
            .log()
            .contains("admin: root@example.com exists, left unchanged"),
        "{}",
        again.log()
    );
}

#[test]
fn logs_carry_request_ids_and_audit_events_but_never_secrets() {
    let work = Workdir::new();
    let mut server = work.serve(&[]);
    let client = reqwest::blocking::Client::new();
    let password = "zebra crossing tangerine 71";
    let reply = client
        .post(server.url("/auth/register"))
        .json(&json!({"email": "logs@example.com", "password": password}))
        .send()
        .expect("register");
    assert_eq!(reply.status(), StatusCode::CREATED);
    let tokens: serde_json::Value = client
        .post(server.url("/auth/login"))
        .header("x-request-id", "req-login-42")
        .json(&json!({"email": "logs@example.com", "password": password}))
        .send()
        .expect("login")
        .json()
        .expect("json");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let me = client
        .get(server.url("/users/me"))
        .bearer_auth(&access)
        .header("cookie", "session=cookie-secret-value")
        .send()
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);
    let created: serde_json::Value = client
        .post(server.url("/users/me/api-keys"))
        .bearer_auth(&access)
        .json(&json!({"name": "logged?"}))
        .send()
        .expect("create key")
        .json()
        .expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    for header in ["x-api-key", "authorization"] {
        let value = if header == "x-api-key" {
            key.clone()
        } else {
            format!("Bearer {key}")
        };
        let used = client
            .get(server.url("/users/me"))
            .header(header, value)
            .send()
            .expect("use key");
        assert_eq!(used.status(), StatusCode::OK);
    }
    assert!(server.terminate());

    let log = server.log();
    for secret in [
        password,
        &access,
        &refresh,
        &key,
        &key[17..],
        JWT_SECRET,
        ADMIN_PASSWORD,
        "cookie-secret-value",
    ] {
        assert!(
            !log.contains(secret),
            "secret {secret:?} appears in the log:\n{log}"
        );
    }
    let login_event = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["event"] == "login")
        .unwrap_or_else(|| panic!("no login audit event in:\n{log}"));
    assert_eq!(login_event["request_id"], "req-login-42");
    assert_eq!(login_event["client_ip"], "127.0.0.1");
    assert!(login_event["user_id"].as_str().is_some());
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|l| l["event"] == "api_key_created"),
        "no api_key_created audit event in:\n{log}"
    );
}

#[test]
fn the_cli_manages_users_with_passwords_from_stdin() {
    let work = Workdir::new();
    let out = work.run(
        &["user", "create", "--email", "Ops@Example.com", "--role", "admin"],
        Some("tidal marble lantern fox\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("created ops@example.com (admin)"),
        "{}",
        text(&out.stdout)
    );

    let out = work.run(
        &["user", "create", "--email", "weak@example.com"],
        Some("password1234\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("too easy to guess"),
        "{}",
        text(&out.stderr)
    );

    let out = work.run(
        &["user", "create", "--email", "dev@example.com"],
        Some("copper willow meadow 9\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = work.run(&["user", "set-role", "ops@example.com", "--role", "user"], None);
    assert!(!out.status.success(), "the last admin cannot be demoted");
    assert!(
        text(&out.stderr).contains("last administrator"),
        "{}",
        text(&out.stderr)
    );

    let out = work.run(&["user", "set-role", "dev@example.com", "--role", "admin"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = work.run(&["user", "list", "--role", "admin"], None);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("ops@example.com") && listing.contains("dev@example.com"),
        "{listing}"
    );

    let out = work.run(&["user", "delete", "dev@example.com"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = work.run(&["user", "list"], None);
    assert!(!text(&out.stdout).contains("dev@example.com"));
    let out = work.run(&["user", "delete", "nobody@example.com"], None);
    assert!(!out.status.success());

    let out = work.run(&["tokens", "purge"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("purged 0 refresh token(s)"));

    // The admin created on the command line can log in to the server.
    let server = work.serve(&[]);
    let login = reqwest::blocking::Client::new()
        .post(server.url("/auth/login"))
        .json(&json!({"email": "ops@example.com", "password": "tidal marble lantern fox"}))
        .send()
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
}

#[test]
fn print_config_shows_the_effective_settings_without_secrets() {
    let work = Workdir::new();
    std::fs::write(
        work.dir.path().join("atelier.toml"),
        "registration = \"closed\"\n[auth]\naccess_token_ttl = \"2m\"\n",
    )
    .expect("write config");
    let out = work.run(&["print-config"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("registration = \"closed\""), "{printed}");
    assert!(printed.contains("access_token_ttl = \"2m\""), "{printed}");
    assert!(
        printed.contains("bind = \"127.0.0.1:0\""),
        "env beats defaults: {printed}"
    );
    assert!(printed.contains("jwt_secret = \"[redacted]\""), "{printed}");
    assert!(!printed.contains(JWT_SECRET), "{printed}");

    let out = work.run(&["--config", "missing.toml", "print-config"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn demo_mode_answers_offline_and_says_so() {
    let work = Workdir::new();
    let mut cmd = work.command(&["serve", "--demo"]);
    cmd.env("ATELIER_ADMIN_EMAIL", "root@example.com")
        .env("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD);
    let mut server = start(cmd);
    let client = reqwest::blocking::Client::new();
    let token = admin_login(&server);
    let reply: serde_json::Value = client
        .post(server.url("/ai/chat"))
        .bearer_auth(&token)
        .json(&json!({"model": "mock/chat", "messages": [{"role": "user", "content": "hello demo"}]}))
        .send()
        .expect("chat")
        .json()
        .expect("json");
    assert!(
        reply["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("hello demo")),
        "{reply}"
    );
    assert!(server.terminate());
    assert!(server.log().contains("DEMO MODE"), "{}", server.log());
}

#[test]
fn the_cli_manages_api_keys_and_budgets() {
    let work = Workdir::new();
    let out = work.run(
        &["user", "create", "--email", "dev@example.com"],
        Some("copper willow meadow 9\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = work.run(
        &[
            "apikey",
            "create",
            "--user",
            "dev@example.com",
            "--name",
            "ci bot",
            "--scopes",
            "chat,images",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Only the key on stdout, so scripts can capture it; the rest on stderr.
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("atl_") && key.len() == 4 + 12 + 1 + 64, "{key}");
    assert!(text(&out.stderr).contains("shown this once"));

    let out = work.run(&["apikey", "list", "dev@example.com"], None);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("ci bot") && listing.contains("chat,images"),
        "{listing}"
    );
    assert!(
        listing.contains(&key[..16]) && !listing.contains(&key[17..]),
        "{listing}"
    );
    let id = listing
        .lines()
        .find(|l| l.contains("ci bot"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the key's id")
        .to_owned();

    // The key works against the server, with its scopes.
    let server = work.serve(&[]);
    let client = reqwest::blocking::Client::new();
    let me = client
        .get(server.url("/users/me"))
        .header("x-api-key", &key)
        .send()
        .expect("request");
    assert_eq!(me.status(), StatusCode::OK);
    drop(server);

    let out = work.run(&["user", "budget", "dev@example.com", "--daily-usd", "2.5"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("of 2.50 USD") && shown.contains("of 50.00 USD"),
        "{shown}"
    );
    let out = work.run(
        &["user", "budget", "dev@example.com", "--daily-requests", "7"],
        None,
    );
    let shown = text(&out.stdout);
    assert!(
        shown.contains("of 2.50 USD") && shown.contains("request(s) of 7"),
        "the other caps stay: {shown}"
    );
    let out = work.run(&["user", "budget", "dev@example.com", "--clear"], None);
    assert!(text(&out.stdout).contains("of 5.00 USD"), "{}", text(&out.stdout));
    let out = work.run(&["user", "budget", "dev@example.com", "--daily-usd=-1"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("zero or more"),
        "{}",
        text(&out.stderr)
    );

    let out = work.run(&["apikey", "revoke", &id], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("revoked"));
    let out = work.run(&["apikey", "revoke", &id], None);
    assert!(!out.status.success(), "a revoked key cannot be revoked again");
    let server = work.serve(&[]);
    let me = client
        .get(server.url("/users/me"))
        .header("x-api-key", &key)
        .send()
        .expect("request");
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}
