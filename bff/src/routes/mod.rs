//! The public API as one table: each [`Route`] says its method and path, who may call it,
//! which service answers it, how its path and query are checked, and how it is documented.
//! The same table registers the routes ([`router`]) and builds the OpenAPI document
//! (`crate::openapi`), whose schemas are the `api` crate's types — the ones the services
//! deserialise and answer with. A route cannot be served undocumented, nor documented with a
//! body its service does not take.
//!
//! Almost every route forwards ([`Handler::Forward`]); three do more: the send (idempotent
//! replays, [`send`]), `GET /v1/me` (four reads in one, [`me`]) and the health probes.

mod forward;
pub mod health;
pub mod me;
pub mod send;
mod table;

use axum::{
    Router,
    http::Method,
    routing::{MethodFilter, on},
};
use common::{auth::Role, problem::ApiError};
use utoipa::openapi::{RefOr, path::Parameter, schema::Schema};

pub use table::ROUTES;

use crate::{AppState, rate_limit::Caller, upstream::Service};

/// Adds a type's schema (and those it refers to) to `schemas`; returns a reference to it, or
/// the schema itself for generic types (their names are not unique).
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;
/// A query string's documented parameters.
pub type ParamsFn = fn() -> Vec<Parameter>;

/// The schema of `T`, registered.
pub fn schema<T: utoipa::ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(schemas);
    if std::any::type_name::<T>().contains('<') {
        return T::schema();
    }
    schemas.push((T::name().into_owned(), T::schema()));
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
}

/// The query parameters of `T`.
pub fn query<T: utoipa::IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Checked, then passed to `upstream` with the caller's token.
    Forward,
    /// `POST /v1/notifications`: forwarded, with replays of completed idempotent requests.
    Send,
    /// `POST /v1/notifications/batch`: forwarded, rate-limited per notification.
    SendBatch,
    /// `GET /v1/me`: profile, contacts, devices and preferences in one answer.
    Me,
    /// `GET /v1/me/inbox/stream`: Server-Sent Events (`crate::inbox_stream`).
    InboxStream,
    /// A provider's signed callback (a delivery receipt, a bounce report): no token — the
    /// service verifies the signature — forwarded as it came.
    Signed,
    Healthz,
    Readyz,
}

/// The path parameter of a route, checked before it is put into an upstream URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `{id}`: an id of this kind of resource (ids are UUIDs; anything else cannot exist).
    Id(&'static str),
    /// `{name}`: a template name.
    Name,
    /// `{key}`: a topic key.
    Key,
}

/// Which characters (besides alphanumerics) a route's raw query string may hold, and its
/// longest length: it is put into the upstream URL as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryRule {
    pub extra: &'static [u8],
    pub max_len: usize,
}

/// How a route counts against rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The caller's role's budget (`rate_limits.user|service|admin`), shared by every route.
    Principal,
    /// Not limited and not authenticated (health probes).
    None,
}

/// A route's HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Put,
    Post,
    Delete,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Put => Method::PUT,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Put => MethodFilter::PUT,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One response of a route's documentation.
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub body: Option<SchemaFn>,
}

/// One row of the table.
pub struct Route {
    pub method: Verb,
    /// The public path (axum syntax); the upstream path is the same.
    pub path: &'static str,
    pub roles: &'static [Role],
    pub upstream: Option<Service>,
    pub handler: Handler,
    pub limit: Limit,
    pub param: Option<Param>,
    pub query: Option<QueryRule>,
    pub tag: &'static str,
    /// The first line is the summary, the rest the description.
    pub doc: &'static str,
    pub request: Option<SchemaFn>,
    pub query_params: Option<ParamsFn>,
    pub answers: &'static [Answer],
    /// A larger request body than `http.body_limit_bytes` (the batch send).
    pub body_limit: Option<usize>,
}

impl Route {
    fn filter(&self) -> MethodFilter {
        self.method.filter()
    }
}

/// Every route of the table, plus the admin guard.
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for route in ROUTES.iter() {
        let method = match route.handler {
            Handler::Forward => forward::method(route),
            Handler::Send => on(route.filter(), send::send),
            Handler::SendBatch => on(route.filter(), send::send_batch),
            Handler::Me => on(route.filter(), me::get_me),
            Handler::InboxStream => on(route.filter(), crate::inbox_stream::stream),
            Handler::Signed => forward::anonymous(route),
            Handler::Healthz => on(route.filter(), health::healthz),
            Handler::Readyz => on(route.filter(), health::readyz),
        };
        let method = match route.body_limit {
            Some(limit) => method.layer(axum::extract::DefaultBodyLimit::max(limit)),
            None => method,
        };
        router = router.route(route.path, method);
    }
    router.route("/v1/admin/{*rest}", axum::routing::any(admin_guard))
}

/// Everything under `/v1/admin` is for admins, including paths that do not exist (yet): a
/// user or service token learns nothing but 403.
pub async fn admin_guard(caller: Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Admin])?;
    Err(ApiError::not_found("no admin route matches this path"))
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        self.0.require(roles)
    }
}
