//! The OpenAPI 3.1 document, built from the handlers' `#[utoipa::path]` annotations by
//! `utoipa-axum` (a route cannot be served without being documented), plus `/docs`.

use std::sync::Arc;

use axum::{Json, Router, response::Html, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{AppState, routes};

#[derive(OpenApi)]
#[openapi(
    info(title = "notify", description = "Notification platform: send, track, and let users choose how they are reached."),
    modifiers(&Bearer),
    tags((name = "notifications"), (name = "users"), (name = "me"), (name = "admin"), (name = "health"))
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every public route, registered together with its documentation.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::notifications::send))
        .routes(routes!(routes::notifications::show))
        .routes(routes!(routes::notifications::cancel))
        .routes(routes!(routes::users::register))
        .routes(routes!(routes::me::get_me))
        .routes(routes!(routes::me::put_contacts))
        .routes(routes!(
            routes::me::get_preferences,
            routes::me::put_preferences
        ))
        .routes(routes!(routes::me::list_devices, routes::me::add_device))
        .routes(routes!(routes::me::remove_device))
        .routes(routes!(routes::me::history))
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(
            routes::admin::put_template,
            routes::admin::get_template,
            routes::admin::delete_template
        ))
        .routes(routes!(routes::admin::list_notifications))
        .routes(routes!(routes::admin::get_delivery))
        .routes(routes!(routes::admin::stats))
        .routes(routes!(routes::admin::dead_letters))
        .routes(routes!(routes::admin::redrive_dead_letters))
        .route("/v1/admin/{*rest}", axum::routing::any(routes::admin_guard))
}

/// Documents the errors every operation can answer, the way it answers them: every 4xx/5xx is
/// `application/problem+json` ([`schema::Problem`]). Each handler lists the errors particular
/// to it; the ones that come from the edge are added here, once for all routes: a malformed
/// query or body (400), the token (401), the role or a grant (403), an unknown id (404, where
/// the path has one), the body's size and type (413, 415), validation (422), the rate limit
/// (429, with `Retry-After`), an unreachable or slow service (503, 504).
pub fn document_problems(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    const PROBLEM: &str = "application/problem+json";
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_id = path.contains('{');
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            for (status, response) in responses.iter_mut() {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                if let RefOr::T(r) = response
                    && let Some(content) = r.content.shift_remove("application/json")
                {
                    r.content.insert(PROBLEM.to_owned(), content);
                }
            }
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            };
            if op.security.is_none() {
                continue; // health probes: no token, no limit, no upstream
            }
            add("400", "Malformed request: query string or JSON body");
            add("401", "No token, or a token that is invalid or expired");
            add(
                "403",
                "The token's role or the caller's grants do not allow this",
            );
            add("422", "A field is invalid; `errors` names each");
            add(
                "503",
                "A service behind the bff is unreachable; nothing was done",
            );
            add(
                "504",
                "A service behind the bff did not answer in time; a write may have been committed",
            );
            if has_id {
                add("404", "No such resource (or not the caller's)");
            }
            if op.request_body.is_some() {
                add("413", "The body is too large");
                add("415", "The body is not `application/json`");
            }
            add(
                "429",
                "Rate limit reached; retry after `Retry-After` seconds",
            );
            if let Some(RefOr::T(limited)) = responses.get_mut("429") {
                limited
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| {
                        utoipa::openapi::HeaderBuilder::new()
                            .schema(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::Integer),
                            )
                            .description(Some("seconds until the budget allows another request"))
                            .build()
                    });
            }
        }
    }
}

/// `/openapi.json` and `/docs` (a Redoc page that renders `/openapi.json`).
pub fn docs_router(doc: utoipa::openapi::OpenApi) -> Router {
    let doc = Arc::new(doc);
    Router::new()
        .route(
            "/openapi.json",
            get(move || std::future::ready(Json(doc.as_ref().clone()))),
        )
        .route("/docs", get(|| async { Html(DOCS) }))
}

const DOCS: &str = r#"<!doctype html>
<html><head><title>notify API</title><meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
<noscript>The raw document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"#;

/// Schemas of the bodies the bff forwards (the services own the real types; these describe
/// the wire contract of ARCHITECTURE.md §5).
#[allow(dead_code)]
pub mod schema {
    use std::collections::BTreeMap;

    use utoipa::ToSchema;

    /// An RFC 9457 problem: every error of the API.
    #[derive(ToSchema)]
    pub struct Problem {
        #[schema(example = "validation_failed")]
        r#type: String,
        title: String,
        status: u16,
        detail: String,
        request_id: Option<String>,
        errors: Option<Vec<FieldError>>,
    }

    #[derive(ToSchema)]
    pub struct FieldError {
        #[schema(example = "recipients[0].email")]
        field: String,
        message: String,
    }

    /// Exactly one field.
    #[derive(ToSchema)]
    pub struct Recipient {
        user_id: Option<String>,
        email: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct Content {
        subject: Option<String>,
        text: String,
        html: Option<String>,
    }

    /// One locale of a template (minijinja; HTML auto-escaped).
    #[derive(ToSchema)]
    pub struct TemplateVariant {
        #[schema(example = "Your invoice {{ number }}")]
        subject: Option<String>,
        #[schema(example = "Invoice {{ number }} is ready.")]
        text: String,
        html: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct TemplateBody {
        locales: BTreeMap<String, TemplateVariant>,
    }

    #[derive(ToSchema)]
    pub struct Template {
        name: String,
        locales: BTreeMap<String, TemplateVariant>,
    }

    #[derive(ToSchema)]
    pub struct SendNotification {
        #[schema(min_items = 1, max_items = 1000)]
        recipients: Vec<Recipient>,
        #[schema(example = "billing")]
        category: String,
        #[schema(example = "normal")]
        priority: Option<String>,
        #[schema(example = json!(["email"]))]
        channels: Option<Vec<String>>,
        /// Either `content`, or a `template` rendered with `data`.
        content: Option<Content>,
        template: Option<String>,
        data: Option<serde_json::Value>,
        send_at: Option<String>,
        ttl_seconds: Option<i64>,
        /// When a user's delivery ends `dead`, the next channel of this list is planned for
        /// them (2 to 5 channels, in order).
        #[schema(example = json!(["push", "sms"]))]
        fallback: Option<Vec<String>>,
    }

    #[derive(ToSchema, serde::Serialize)]
    pub struct Attempt {
        attempt: i32,
        outcome: String,
        provider: String,
        provider_message_id: Option<String>,
        error: Option<serde_json::Value>,
        duration_ms: i64,
        at: String,
    }

    #[derive(ToSchema, serde::Serialize)]
    pub struct Delivery {
        id: String,
        notification_id: String,
        channel: String,
        lane: String,
        recipient: serde_json::Value,
        address: Option<String>,
        #[schema(example = "sent")]
        status: String,
        reason: Option<String>,
        attempts: i32,
        last_error: Option<serde_json::Value>,
        last_attempt: Option<Attempt>,
        created_at: String,
        updated_at: String,
        sent_at: Option<String>,
        /// The dead delivery this one replaces (channel fallback).
        fallback_of: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct DeliveryPage {
        items: Vec<Delivery>,
        next_cursor: Option<String>,
    }

    /// Which dead letters; every field given must match. `{}` matches all of them.
    #[derive(ToSchema)]
    pub struct RedriveFilter {
        channel: Option<String>,
        error_code: Option<String>,
        provider: Option<String>,
        since: Option<String>,
        until: Option<String>,
    }

    /// Exactly one of `ids` (1..=1000) and `filter`.
    #[derive(ToSchema)]
    pub struct RedriveRequest {
        ids: Option<Vec<String>>,
        filter: Option<RedriveFilter>,
    }

    #[derive(ToSchema)]
    pub struct Redriven {
        redriven: u64,
        /// Ids given that were not dead.
        skipped: Option<Vec<String>>,
    }

    /// Who re-drove a delivery and why.
    #[derive(ToSchema, serde::Serialize)]
    pub struct Redrive {
        from_attempt: i32,
        to_attempt: i32,
        #[schema(example = "dead_letter")]
        kind: String,
        actor: String,
        detail: Option<String>,
        at: String,
    }

    #[derive(ToSchema)]
    pub struct Notification {
        id: String,
        #[schema(example = "in_progress")]
        status: String,
        category: String,
        priority: String,
        created_at: String,
        send_at: Option<String>,
        deliveries: Vec<Delivery>,
    }

    #[derive(ToSchema)]
    pub struct NotificationPage {
        items: Vec<Notification>,
        next_cursor: Option<String>,
    }

    /// A delivery (every field of `Delivery`) with every attempt.
    #[derive(ToSchema, serde::Serialize)]
    pub struct DeliveryDetail {
        #[serde(flatten)]
        delivery: Delivery,
        attempt_log: Vec<Attempt>,
        redrives: Vec<Redrive>,
    }

    #[derive(ToSchema)]
    pub struct Latency {
        p50: Option<f64>,
        p95: Option<f64>,
        p99: Option<f64>,
    }

    #[derive(ToSchema)]
    pub struct Stats {
        window_secs: i64,
        #[schema(example = json!({"email": {"sent": 120, "dead": 2}}))]
        counts: BTreeMap<String, BTreeMap<String, i64>>,
        latency_ms: Latency,
    }

    #[derive(ToSchema)]
    pub struct RegisterUser {
        email: Option<String>,
        #[schema(example = "+4930123456")]
        phone: Option<String>,
        telegram_chat_id: Option<String>,
        locale: Option<String>,
        #[schema(example = "Europe/Berlin")]
        timezone: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct Registered {
        user_id: String,
    }

    #[derive(ToSchema)]
    pub struct Contacts {
        email: Option<String>,
        phone: Option<String>,
        telegram_chat_id: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct QuietHours {
        #[schema(example = "22:00")]
        start: String,
        #[schema(example = "07:00")]
        end: String,
        #[schema(example = "Europe/Berlin")]
        timezone: String,
    }

    #[derive(ToSchema)]
    pub struct PreferencesUpdate {
        #[schema(example = json!({"email": true, "sms": false}))]
        channels: Option<BTreeMap<String, bool>>,
        #[schema(example = json!({"marketing": {"email": false}}))]
        categories: Option<BTreeMap<String, BTreeMap<String, bool>>>,
        quiet_hours: Option<QuietHours>,
        locale: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct PreferencesView {
        channels: BTreeMap<String, bool>,
        categories: BTreeMap<String, BTreeMap<String, bool>>,
        quiet_hours: Option<QuietHours>,
        locale: String,
        mandatory_categories: Vec<String>,
    }

    #[derive(ToSchema)]
    pub struct DeviceRequest {
        #[schema(example = "fcm", pattern = "^(fcm|apns)$")]
        platform: String,
        #[schema(min_length = 1, max_length = 4096)]
        token: String,
    }

    #[derive(ToSchema)]
    pub struct Device {
        id: String,
        platform: String,
        token: String,
        created_at: String,
        last_seen: String,
    }

    #[derive(ToSchema)]
    pub struct DeviceList {
        items: Vec<Device>,
    }

    #[derive(ToSchema)]
    pub struct Me {
        user_id: String,
        locale: String,
        timezone: String,
        created_at: String,
        contacts: Contacts,
        devices: Vec<Device>,
        preferences: PreferencesView,
    }

    #[derive(ToSchema)]
    pub struct ChannelStatus {
        channel: String,
        status: String,
    }

    #[derive(ToSchema)]
    pub struct HistoryItem {
        id: String,
        category: String,
        status: String,
        created_at: String,
        deliveries: Vec<ChannelStatus>,
    }

    #[derive(ToSchema)]
    pub struct History {
        items: Vec<HistoryItem>,
        next_cursor: Option<String>,
    }
}
