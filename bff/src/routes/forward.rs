//! The handler of every [`Handler::Forward`](super::Handler::Forward) route: authorise by
//! role, check the path parameter and the query string, take the body within the limit, and
//! forward with the caller's token. Authorisation comes first: a caller without the role
//! learns nothing about their input (403 before 404 or 422).

use axum::{
    extract::{FromRequest, RawPathParams, RawQuery, Request, State},
    response::Response,
    routing::{MethodRouter, on},
};
use common::{http::RawBody, problem::ApiError};

use super::{Param, QueryRule, Route};
use crate::{AppState, rate_limit::Caller};

/// The method router of `route`.
pub fn method(route: &'static Route) -> MethodRouter<AppState> {
    on(
        route.filter(),
        move |State(state): State<AppState>,
              caller: Caller,
              params: RawPathParams,
              RawQuery(query): RawQuery,
              req: Request| async move {
            forward(route, &state, &caller, &params, query, req).await
        },
    )
}

/// The method router of a route whose caller has no token (a provider's signed receipt): the
/// body and headers go to the service as they came, which verifies the signature.
pub fn anonymous(route: &'static Route) -> MethodRouter<AppState> {
    on(
        route.filter(),
        move |State(state): State<AppState>, req: Request| async move {
            let headers = req.headers().clone();
            let RawBody(body) = RawBody::from_request(req, &state).await?;
            let service = route
                .upstream
                .expect("a forwarded route names its upstream service");
            state
                .upstream
                .forward_anonymous(service, route.method.method(), route.path, &headers, body)
                .await
        },
    )
}

async fn forward(
    route: &'static Route,
    state: &AppState,
    caller: &Caller,
    params: &RawPathParams,
    query: Option<String>,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(route.roles)?;
    let mut path = route.path.to_owned();
    for (name, value) in params.iter() {
        let value = checked_param(route.param, value)?;
        path = path.replace(&format!("{{{name}}}"), value);
    }
    if let Some(rule) = route.query {
        path = with_query(&path, query, rule)?;
    }
    let headers = req.headers().clone();
    // Only routes that document a body pass one on.
    let body = match route.request {
        Some(_) => RawBody::from_request(req, state).await?.0,
        None => Default::default(),
    };
    let service = route
        .upstream
        .expect("a forwarded route names its upstream service");
    state
        .upstream
        .forward(
            service,
            route.method.method(),
            &path,
            &caller.0,
            &headers,
            body,
        )
        .await
}

/// A path parameter, checked before it is put into an upstream URL.
fn checked_param(param: Option<Param>, value: &str) -> Result<&str, ApiError> {
    match param {
        Some(Param::Id(what)) => {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            ok.then_some(value)
                .ok_or_else(|| ApiError::not_found(format!("no {what} has this id")))
        }
        Some(Param::Name) => common::address::parse_name(value)
            .map_err(|_| ApiError::not_found("no template has this name")),
        Some(Param::Key) => common::address::parse_name(value)
            .map_err(|_| ApiError::not_found("no topic has this key")),
        None => Err(ApiError::not_found("no route matches this path")),
    }
}

/// `path?query`, after checking the raw query string holds only URL characters from
/// alphanumerics and the rule's extra characters.
fn with_query(path: &str, query: Option<String>, rule: QueryRule) -> Result<String, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > rule.max_len
        || !query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || rule.extra.contains(&b))
    {
        return Err(ApiError::invalid_field(
            "query",
            "unexpected characters in the query string",
        ));
    }
    Ok(if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    })
}
