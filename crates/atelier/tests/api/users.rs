//! `/users`: profile changes and admin user management.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, TestApp};

#[tokio::test]
async fn me_shows_the_profile() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let me = app
        .get("/users/me", Some(&user.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(me.body["id"], user.id.as_str());
    assert_eq!(me.body["email"], user.email.as_str());
    assert_eq!(me.body["role"], "user");
    assert!(
        me.body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{}",
        me.text
    );
}

#[tokio::test]
async fn changing_the_email_needs_the_current_password() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let other = app.user().await;
    let token = Some(user.access.as_str());

    app.put(
        "/users/me",
        token,
        json!({"email": "new@example.com", "current_password": "wrong wrong wrong"}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "wrong_password");
    app.put("/users/me", token, json!({"email": "new@example.com"}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    app.put(
        "/users/me",
        token,
        json!({"email": other.email, "current_password": user.password}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "email_taken");
    app.put(
        "/users/me",
        token,
        json!({"email": "nope", "current_password": user.password}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email");
    app.put("/users/me", token, json!({"current_password": user.password}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "nothing_to_change");

    let updated = app
        .put(
            "/users/me",
            token,
            json!({"email": " New@Example.com", "current_password": user.password}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(updated.body["email"], "new@example.com");
    // An email change does not end sessions.
    app.get("/users/me", token).await.expect(StatusCode::OK);
    app.login("new@example.com", &user.password)
        .await
        .expect(StatusCode::OK);
    app.login(&user.email, &user.password)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = TestApp::spawn().await;
    let here = app.user().await;
    let elsewhere = app.sign_in(&here.email, &here.password).await;
    let new_password = "granite pelican umbrella sonata";

    app.put(
        "/users/me",
        Some(&here.access),
        json!({"new_password": "password1234", "current_password": here.password}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "weak_password");
    app.put(
        "/users/me",
        Some(&here.access),
        json!({"new_password": new_password, "current_password": here.password}),
    )
    .await
    .expect(StatusCode::OK);

    // Every access token issued before the change is void, this session's included…
    app.get("/users/me", Some(&elsewhere.access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
    app.get("/users/me", Some(&here.access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
    // …but only this session can continue, by refreshing.
    app.refresh(&elsewhere.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    let next = app.refresh(&here.refresh).await.expect(StatusCode::OK);
    app.get("/users/me", next.body["access_token"].as_str())
        .await
        .expect(StatusCode::OK);

    app.login(&here.email, &here.password)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.login(&here.email, new_password).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn admin_routes_refuse_users_and_strangers() {
    let app = TestApp::spawn().await;
    let user = app.user().await;
    let id = user.id.clone();
    let routes = [
        ("GET", "/users".to_owned()),
        ("DELETE", format!("/users/{id}")),
        ("PUT", format!("/users/{id}/role")),
        ("GET", "/admin/stats".to_owned()),
        ("GET", "/admin/health/db".to_owned()),
        ("POST", "/admin/tokens/purge".to_owned()),
    ];
    for (method, path) in routes {
        let method: reqwest::Method = method.parse().expect("method");
        let body = (method == reqwest::Method::PUT).then(|| json!({"role": "admin"}));
        let reply = app
            .send(method.clone(), &path, Some(&user.access), body.clone())
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}"
        );
        let reply = app.send(method.clone(), &path, None, body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "missing_token"),
            "{method} {path}"
        );
    }
    let me = app
        .get("/users/me", Some(&user.access))
        .await
        .expect(StatusCode::OK);
    assert_eq!(me.body["role"], "user", "nothing changed");
}

#[tokio::test]
async fn admins_list_users_with_filters_and_pages() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let token = Some(admin.access.as_str());
    for name in ["alice", "bob", "carol", "dave"] {
        app.register(&format!("{name}@team.example"), "velvet otter quantum lantern")
            .await
            .expect(StatusCode::CREATED);
    }

    let all = app.get("/users", token).await.expect(StatusCode::OK);
    assert_eq!(all.body["total"], 5);
    assert_eq!(all.body["users"].as_array().map(Vec::len), Some(5));
    assert!(all.body["next_cursor"].is_null());
    assert_eq!(all.body["users"][0]["email"], ADMIN_EMAIL, "oldest first");

    let page1 = app.get("/users?limit=2", token).await.expect(StatusCode::OK);
    let cursor = page1.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page2 = app
        .get(&format!("/users?limit=2&cursor={cursor}"), token)
        .await
        .expect(StatusCode::OK);
    let page3 = app
        .get(
            &format!(
                "/users?limit=2&cursor={}",
                page2.body["next_cursor"].as_str().expect("third page")
            ),
            token,
        )
        .await
        .expect(StatusCode::OK);
    let emails: Vec<String> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| p.body["users"].as_array().cloned().unwrap_or_default())
        .map(|u| u["email"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        emails,
        [
            ADMIN_EMAIL,
            "alice@team.example",
            "bob@team.example",
            "carol@team.example",
            "dave@team.example"
        ]
    );
    assert!(page3.body["next_cursor"].is_null());

    let team = app
        .get("/users?email=TEAM.example&limit=100", token)
        .await
        .expect(StatusCode::OK);
    assert_eq!(team.body["total"], 4);
    let admins = app.get("/users?role=admin", token).await.expect(StatusCode::OK);
    assert_eq!(admins.body["total"], 1);

    for bad in [
        "/users?limit=0",
        "/users?limit=101",
        "/users?role=owner",
        "/users?cursor=nope",
        "/users?page=2",
    ] {
        app.get(bad, token)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    }
}

#[tokio::test]
async fn a_role_change_applies_to_tokens_already_issued() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;
    app.get("/admin/stats", Some(&user.access))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");

    let promoted = app
        .put(
            &format!("/users/{}/role", user.id),
            Some(&admin.access),
            json!({"role": "admin"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(promoted.body["role"], "admin");

    // The token issued while a user is void at once; a refreshed one carries the new role.
    app.get("/users/me", Some(&user.access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
    let next = app.refresh(&user.refresh).await.expect(StatusCode::OK);
    let access = next.body["access_token"].as_str().expect("access");
    app.get("/admin/stats", Some(access)).await.expect(StatusCode::OK);

    // Demotion works the same way.
    app.put(
        &format!("/users/{}/role", user.id),
        Some(&admin.access),
        json!({"role": "user"}),
    )
    .await
    .expect(StatusCode::OK);
    app.get("/admin/stats", Some(access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");

    app.put(
        &format!("/users/{}/role", user.id),
        Some(&admin.access),
        json!({"role": "owner"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    app.put(
        &format!("/users/{}/role", uuid::Uuid::now_v7()),
        Some(&admin.access),
        json!({"role": "user"}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "user_not_found");
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    app.put(
        &format!("/users/{}/role", admin.id),
        Some(&admin.access),
        json!({"role": "user"}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "last_admin");
    // With a second admin, the first may step down.
    let user = app.user().await;
    app.put(
        &format!("/users/{}/role", user.id),
        Some(&admin.access),
        json!({"role": "admin"}),
    )
    .await
    .expect(StatusCode::OK);
    app.put(
        &format!("/users/{}/role", admin.id),
        Some(&admin.access),
        json!({"role": "user"}),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let user = app.user().await;

    app.delete(&format!("/users/{}", admin.id), Some(&admin.access))
        .await
        .expect_error(StatusCode::CONFLICT, "cannot_delete_self");
    app.delete(&format!("/users/{}", uuid::Uuid::now_v7()), Some(&admin.access))
        .await
        .expect_error(StatusCode::NOT_FOUND, "user_not_found");
    app.delete("/users/not-a-uuid", Some(&admin.access))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    app.get("/users/me", Some(&user.access))
        .await
        .expect(StatusCode::OK);
    app.delete(&format!("/users/{}", user.id), Some(&admin.access))
        .await
        .expect(StatusCode::NO_CONTENT);
    app.get("/users/me", Some(&user.access))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "token_revoked");
    app.refresh(&user.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    app.login(&user.email, &user.password)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.delete(&format!("/users/{}", user.id), Some(&admin.access))
        .await
        .expect_error(StatusCode::NOT_FOUND, "user_not_found");
}
