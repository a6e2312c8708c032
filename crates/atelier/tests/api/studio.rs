//! The studio's session, CSRF and safety rules over HTTP (the browser suite in
//! `e2e/` drives the pages themselves).

use std::collections::HashMap;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, redirect};
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};

/// A minimal browser: keeps cookies, does not follow redirects.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    jar: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .expect("client");
        Browser {
            app,
            client,
            jar: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = request
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("sent");
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        };
        for cookie in page
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || cookie.contains("Max-Age=0") {
                    self.jar.remove(name);
                } else {
                    self.jar.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(self.app.url(path));
        self.send(request).await
    }

    fn csrf(&self) -> String {
        self.jar.get("atelier_csrf").cloned().unwrap_or_default()
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf();
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &csrf));
        let request = self.client.post(self.app.url(path)).form(&form);
        self.send(request).await
    }

    async fn log_in(&mut self, email: &str, password: &str) {
        self.get("/studio/login").await;
        let page = self
            .post_form("/studio/login", &[("email", email), ("password", password)])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }
}

#[tokio::test]
async fn pages_need_a_session_and_send_strict_headers() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/studio/images?x=1").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let csrf = page
        .set_cookie("atelier_csrf")
        .expect("a CSRF cookie on the first visit");
    assert!(
        csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict") && csrf.contains("Path=/studio"),
        "{csrf}"
    );
    assert_eq!(page.location(), "/studio/login?next=%2Fstudio%2Fimages%3Fx%3D1");
    assert_eq!(browser.get("/").await.location(), "/studio/chat");

    let login = browser.get("/studio/login").await;
    assert_eq!(login.status, StatusCode::OK);
    let csp = login.headers["content-security-policy"].to_str().expect("text");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(login.headers["x-frame-options"], "DENY");
    assert!(
        !login.body.contains("<script>") && !login.body.contains("onclick="),
        "no inline script"
    );
    assert!(
        login.set_cookie("atelier_csrf").is_none(),
        "the token is kept, not replaced"
    );

    // A page that does not exist is a friendly 404.
    browser.log_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let missing = browser.get("/studio/nowhere").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("There is nothing here"));
    let asset = app
        .client
        .get(app.url("/static/studio.css"))
        .send()
        .await
        .expect("sent");
    assert_eq!(asset.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .expect("text")
            .contains("immutable")
    );
}

#[tokio::test]
async fn forms_without_the_csrf_token_or_from_elsewhere_are_refused() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.get("/studio/login").await;
    let form = [("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)];

    let request = browser.client.post(app.url("/studio/login")).form(&form);
    assert_eq!(
        browser.send(request).await.status,
        StatusCode::FORBIDDEN,
        "no token"
    );
    let request = browser
        .client
        .post(app.url("/studio/login"))
        .form(&[("csrf_token", "forged-forged-forged-forged-forged")]);
    assert_eq!(
        browser.send(request).await.status,
        StatusCode::FORBIDDEN,
        "wrong token"
    );
    let csrf = browser.csrf();
    let mut with_token = form.to_vec();
    with_token.push(("csrf_token", &csrf));
    let request = browser
        .client
        .post(app.url("/studio/login"))
        .header("origin", "https://evil.example")
        .form(&with_token);
    assert_eq!(
        browser.send(request).await.status,
        StatusCode::FORBIDDEN,
        "cross-site"
    );
    assert!(
        !browser.jar.contains_key("atelier_access"),
        "none of that logged in"
    );

    let ok = browser.post_form("/studio/login", &form).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    // The JSON chat endpoint wants the header.
    let request = browser
        .client
        .post(app.url("/studio/chat/send"))
        .json(&json!({"model": "mock/chat", "content": "hi"}));
    assert_eq!(browser.send(request).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn login_sets_httponly_session_cookies_secure_only_over_https() {
    let app = TestApp::spawn_with(|s| s.trust_proxy_headers = true).await;
    let mut browser = Browser::new(&app);
    browser.get("/studio/login").await;
    let page = browser
        .post_form(
            "/studio/login",
            &[
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/studio/history"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/studio/history");
    for name in ["atelier_access", "atelier_refresh"] {
        let cookie = page.set_cookie(name).expect(name);
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/studio"),
            "{cookie}"
        );
        assert!(
            !cookie.contains("Secure"),
            "plain HTTP on localhost must work: {cookie}"
        );
    }
    assert_eq!(browser.get("/studio/history").await.status, StatusCode::OK);

    let mut behind_tls = Browser::new(&app);
    behind_tls.get("/studio/login").await;
    let csrf = behind_tls.csrf();
    let request = behind_tls
        .client
        .post(app.url("/studio/login"))
        .header("x-forwarded-proto", "https")
        .form(&[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("csrf_token", &csrf),
        ]);
    let page = behind_tls.send(request).await;
    assert!(
        page.set_cookie("atelier_access")
            .is_some_and(|c| c.contains("; Secure"))
    );

    // Errors are shown in the form.
    let mut wrong = Browser::new(&app);
    wrong.get("/studio/login").await;
    let page = wrong
        .post_form(
            "/studio/login",
            &[("email", ADMIN_EMAIL), ("password", "not it at all")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.body.contains("Email or password is incorrect"),
        "{}",
        page.body
    );
    let page = wrong
        .post_form(
            "/studio/login",
            &[
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/studio/chat", "no open redirect");
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_for_concurrent_requests() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.log_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // The access token is gone (as when it expires); the refresh token remains.
    browser
        .jar
        .insert("atelier_access".into(), "expired.or.revoked".into());
    let cookies = browser.cookie_header();

    let mut requests = tokio::task::JoinSet::new();
    for path in [
        "/studio/chat",
        "/studio/images",
        "/studio/history",
        "/studio/account",
        "/studio/text",
    ] {
        let request = browser
            .client
            .get(app.url(path))
            .header("cookie", cookies.clone());
        requests.spawn(async move { request.send().await.expect("sent") });
    }
    let responses = requests.join_all().await;
    let mut new_refresh = Vec::new();
    for response in &responses {
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "every concurrent request is served"
        );
        let refresh = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("atelier_refresh="))
            .map(|c| c.split(';').next().unwrap_or_default().to_owned())
            .expect("new cookies");
        new_refresh.push(refresh);
    }
    new_refresh.dedup();
    assert_eq!(new_refresh.len(), 1, "one rotation, shared by all");
    // And the session is alive: the shared new token still works.
    let token = new_refresh[0].trim_start_matches("atelier_refresh=");
    app.refresh(token).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn model_output_and_user_text_are_escaped() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.log_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = app.admin().await;
    let evil = "<img src=x onerror=alert(1)><script>alert(2)</script>";
    let reply = app
        .post(
            "/ai/chat",
            Some(&admin.access),
            json!({"model": "mock/chat", "messages": [{"role": "user", "content": evil}]}),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    let id = reply["conversation_id"].as_str().expect("id");
    let page = browser.get(&format!("/studio/chat/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("<script>alert(2)</script>") && !page.body.contains("<img src=x"),
        "escaped"
    );
    assert!(
        page.body.contains("&lt;script&gt;alert(2)&lt;&#x2f;script&gt;"),
        "shown as text"
    );
}

#[tokio::test]
async fn the_admin_console_is_for_admins_and_reflects_role_changes() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let mut browser = Browser::new(&app);
    browser.log_in(&user.email, &user.password).await;
    assert_eq!(browser.get("/studio/admin").await.status, StatusCode::NOT_FOUND);
    assert!(
        !browser
            .get("/studio/chat")
            .await
            .body
            .contains("href=\"/studio/admin\"")
    );

    let admin = app.admin().await;
    app.put(
        &format!("/users/{}/role", user.id),
        Some(&admin.access),
        json!({"role": "admin"}),
    )
    .await
    .expect(StatusCode::OK);
    // The very next page knows: the old access token is void, the session refreshes.
    let page = browser.get("/studio/chat").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("href=\"/studio/admin\""));
    let console = browser.get("/studio/admin").await;
    assert_eq!(console.status, StatusCode::OK);
    assert!(console.body.contains("Cost per day"));

    let out = browser.post_form("/studio/logout", &[]).await;
    assert_eq!(out.location(), "/studio/login?info=logged_out");
    assert!(!browser.jar.contains_key("atelier_access") && !browser.jar.contains_key("atelier_refresh"));
    assert_eq!(browser.get("/studio/chat").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn htmx_requests_without_a_session_are_sent_to_the_login_page() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.get("/studio/login").await;
    let mut headers = HeaderMap::new();
    headers.insert("hx-request", HeaderValue::from_static("true"));
    let request = browser
        .client
        .get(app.url("/studio/admin/users"))
        .headers(headers);
    let page = browser.send(request).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.headers["hx-redirect"]
            .to_str()
            .expect("text")
            .starts_with("/studio/login")
    );
}

#[tokio::test]
async fn studio_logins_share_the_login_rate_limit() {
    let app = TestApp::spawn_with(|s| s.limits.login = Some("2/1m".parse().unwrap())).await;
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect(StatusCode::OK);
    let mut browser = Browser::new(&app);
    browser.log_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut other = Browser::new(&app);
    other.get("/studio/login").await;
    let page = other
        .post_form(
            "/studio/login",
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.body.contains("rate limit reached"), "{}", page.body);
    assert!(page.set_cookie("atelier_access").is_none() && page.set_cookie("atelier_refresh").is_none());
}
