//! The REST API: the route table, and one module per area of the seed's tables.

pub mod admin;
pub mod ai;
pub mod auth;
pub mod docs;
pub mod extract;
pub mod gate;
pub mod generate;
pub mod health;
pub mod keys;
pub mod media;
pub mod middleware;
pub mod schema;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{InfoBuilder, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Every REST route, with its OpenAPI description. `upload_limit` bounds the
/// bodies of the routes that take image uploads.
fn api(upload_limit: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, from_image) = routes!(generate::generate_video_from_image);
    let from_image = (
        schemas,
        paths,
        from_image.layer(DefaultBodyLimit::max(upload_limit)),
    );
    OpenApiRouter::new()
        .routes(routes!(health::get_healthz))
        .routes(routes!(health::get_readyz))
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(users::get_me, users::update_me))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::get_my_budget))
        .routes(routes!(keys::get_user_budget, keys::set_user_budget))
        .routes(routes!(users::list_users))
        .routes(routes!(users::delete_user))
        .routes(routes!(users::set_user_role))
        .routes(routes!(admin::get_stats))
        .routes(routes!(admin::get_db_health))
        .routes(routes!(admin::purge_tokens))
        .routes(routes!(admin::get_allowed_models, admin::set_allowed_models))
        .routes(routes!(admin::get_upstream))
        .routes(routes!(admin::get_usage))
        .routes(routes!(ai::list_models))
        .routes(routes!(ai::chat))
        .routes(routes!(ai::list_conversations))
        .routes(routes!(
            ai::get_conversation,
            ai::rename_conversation,
            ai::delete_conversation
        ))
        .routes(routes!(generate::generate_text))
        .routes(routes!(generate::generate_image))
        .routes(routes!(generate::generate_video))
        .routes(from_image)
        .routes(routes!(generate::list_jobs))
        .routes(routes!(generate::get_job))
        .routes(routes!(generate::list_generations))
        .routes(routes!(media::get_media))
        .routes(routes!(media::get_signed_media))
}

/// The REST routes and the OpenAPI document describing them.
pub fn router(upload_limit: usize) -> (Router<AppState>, OpenApi) {
    let (router, mut doc) = api(upload_limit).split_for_parts();
    doc.info = InfoBuilder::new()
        .title("atelier")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "A self-hosted AI generation studio and gateway. Errors are always \
             `{\"error\": {\"code\", \"message\"}}`; `code` is stable.",
        ))
        .build();
    // Listed in the order a reader needs them.
    doc.tags = Some(
        [
            (
                "auth",
                "Accounts and sessions: register, log in, refresh, log out.",
            ),
            ("users", "Your profile, and user management for admins."),
            ("ai", "Models and chat, with stored conversations."),
            (
                "generate",
                "Text, images and videos from a prompt; history; media.",
            ),
            ("admin", "Statistics and maintenance for admins."),
            ("health", "Probes for load balancers and orchestrators."),
        ]
        .into_iter()
        .map(|(name, about)| TagBuilder::new().name(name).description(Some(about)).build())
        .collect(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    (router, doc)
}

/// The OpenAPI document alone, e.g. for the snapshot test.
pub fn openapi() -> OpenApi {
    router(0).1
}
