//! The OpenAPI document (snapshot-tested, so API drift shows in review) and the
//! offline docs page.

use reqwest::StatusCode;

use crate::helpers::TestApp;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/snapshots/openapi.json");

/// Set `UPDATE_SNAPSHOTS=1` to accept a changed document.
#[test]
fn openapi_document_matches_the_snapshot() {
    let doc = atelier::api::openapi();
    let rendered = serde_json::to_string_pretty(&doc).expect("serialise") + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &rendered).expect("write snapshot");
    }
    let expected = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        expected == rendered,
        "the OpenAPI document changed; review it and run with UPDATE_SNAPSHOTS=1 to accept:\n{}",
        first_difference(&expected, &rendered)
    );
}

fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map_or_else(
            || {
                format!(
                    "(lengths differ: {} vs {} lines)",
                    a.lines().count(),
                    b.lines().count()
                )
            },
            |(i, (x, y))| format!("line {}:\n- {x}\n+ {y}", i + 1),
        )
}

#[test]
fn every_route_of_the_seed_is_documented() {
    let doc = serde_json::to_value(atelier::api::openapi()).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/auth/register", "post"),
        ("/auth/login", "post"),
        ("/auth/refresh", "post"),
        ("/auth/logout", "post"),
        ("/users/me", "get"),
        ("/users/me", "put"),
        ("/users", "get"),
        ("/users/{id}", "delete"),
        ("/users/{id}/role", "put"),
        ("/admin/stats", "get"),
        ("/admin/health/db", "get"),
        ("/admin/tokens/purge", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn the_served_document_and_docs_page_work_offline() {
    let app = TestApp::spawn().await;
    let served = app.get("/openapi.json", None).await.expect(StatusCode::OK);
    assert_eq!(
        served.body,
        serde_json::to_value(atelier::api::openapi()).expect("json")
    );

    let page = app.client.get(app.url("/docs")).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets: {html}"
    );
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        assert!(html.contains(asset), "{asset} is referenced");
        let reply = app.client.get(app.url(asset)).send().await.expect("sent");
        assert_eq!(reply.status(), StatusCode::OK, "{asset}");
        assert!(
            reply.bytes().await.expect("body").len() > 100,
            "{asset} has content"
        );
    }
}
