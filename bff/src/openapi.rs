//! The OpenAPI 3.1 document, built from the route table (`crate::routes::ROUTES`) with the
//! schemas of the `api` crate's types, plus `/openapi.json` and `/docs`.

use std::sync::Arc;

use axum::{Json, Router, routing::get};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, Paths,
    RefOr, ResponseBuilder, Tag,
    path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn},
    request_body::RequestBodyBuilder,
    schema::Schema,
    security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
};

use crate::routes::{Limit, Param, ROUTES, Route, Verb};

/// The document of every route in the table.
pub fn document() -> OpenApi {
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    crate::routes::schema::<common::problem::Problem>(&mut schemas);
    let mut paths = Paths::new();
    for route in ROUTES.iter() {
        let method = match route.method {
            Verb::Get => HttpMethod::Get,
            Verb::Put => HttpMethod::Put,
            Verb::Post => HttpMethod::Post,
            Verb::Delete => HttpMethod::Delete,
        };
        let operation = operation(route, &mut schemas);
        let item = PathItem::new(method, operation);
        match paths.paths.get_mut(route.path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                paths.paths.insert(route.path.to_owned(), item);
            }
        }
    }
    let mut components = ComponentsBuilder::new().security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("notify")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Notification platform: send, track, and let users choose how they are reached.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .tags(Some(
            ["notifications", "topics", "users", "me", "admin", "receipts", "health"]
                .into_iter()
                .map(Tag::new)
                .collect::<Vec<_>>(),
        ))
        .build();
    document_problems(&mut doc);
    doc
}

fn operation(
    route: &Route,
    schemas: &mut Vec<(String, RefOr<Schema>)>,
) -> utoipa::openapi::path::Operation {
    let (summary, description) = match route.doc.split_once("\n\n") {
        Some((s, d)) => (s, Some(d)),
        None => (route.doc, None),
    };
    let mut op = OperationBuilder::new()
        .tag(route.tag)
        .summary(Some(summary))
        .description(description)
        .operation_id(Some(operation_id(route)));
    if route.limit == Limit::Principal {
        op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    if let Some(param) = route.param {
        let (name, description) = match param {
            Param::Id(what) => ("id", format!("the {what}'s id")),
            Param::Name => ("name", "the template's name".to_owned()),
            Param::Key => ("key", "the topic's key".to_owned()),
        };
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some(description))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String),
                )),
        );
    }
    if let Some(params) = route.query_params {
        for p in params() {
            op = op.parameter(p);
        }
    }
    if route.handler == crate::routes::Handler::Send {
        op = op.parameter(
            ParameterBuilder::new()
                .name(common::idempotency::HEADER)
                .parameter_in(ParameterIn::Header)
                .required(utoipa::openapi::Required::False)
                .description(Some(
                    "Same key and body within 24 h: the original answer again; different body: 422; first still running: 409",
                ))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255)),
                )),
        );
    }
    if let Some(body) = route.request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body(schemas))).build(),
                )
                .required(Some(utoipa::openapi::Required::True))
                .build(),
        ));
    }
    for answer in route.answers {
        let mut response = ResponseBuilder::new().description(answer.description);
        if let Some(body) = answer.body {
            let media = if answer.status >= 400 {
                common::problem::PROBLEM_JSON
            } else if route.handler == crate::routes::Handler::InboxStream {
                // Each event's data is the schema's JSON.
                "text/event-stream"
            } else {
                "application/json"
            };
            response = response.content(
                media,
                ContentBuilder::new().schema(Some(body(schemas))).build(),
            );
        }
        op = op.response(answer.status.to_string(), response.build());
    }
    // A signed callback (no token) is still forwarded: what forwarding can answer.
    if route.limit == Limit::None && route.upstream.is_some() {
        let mut built = op.build();
        for (status, description) in [
            ("400", "Malformed request"),
            ("413", "The body is too large"),
            (
                "503",
                "The service behind the bff is unreachable; nothing was done",
            ),
            ("504", "The service behind the bff did not answer in time"),
        ] {
            built
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                common::problem::PROBLEM_JSON,
                                ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .build(),
                    )
                });
        }
        return built;
    }
    op.build()
}

/// `getNotificationsById`-style: the method and the path's words.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.method().as_str().to_ascii_lowercase();
    for part in route
        .path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "v1")
    {
        let word = part.trim_start_matches('{').trim_end_matches('}');
        let mut upper = true;
        for c in word.chars() {
            if c == '-' || c == '_' {
                upper = true;
            } else if upper {
                id.extend(c.to_uppercase());
                upper = false;
            } else {
                id.push(c);
            }
        }
    }
    id
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

/// The document as served: [`document`] with the rules of [`api::rules`] the derive cannot
/// state (exactly one recipient kind, closed sets, cursor forms, no NUL).
pub fn served() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).expect("the document serialises");
    api::rules::refine(&mut doc);
    doc
}

/// `/openapi.json` (the Redoc page at `/docs` that renders it is [`crate::web`]'s).
pub fn docs_router(doc: serde_json::Value) -> Router {
    let doc = Arc::new(doc);
    Router::new().route(
        "/openapi.json",
        get(move || std::future::ready(Json(doc.as_ref().clone()))),
    )
}
