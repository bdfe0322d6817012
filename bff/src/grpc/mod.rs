//! The gRPC API (`notify.v1.Notifications`, `notify.v1.Topics` and `notify.v1.Inbox`, the
//! `proto` crate), served next to the REST API
//! on the same port (HTTP/2 without TLS; nginx's `grpc_pass` in front).
//!
//! Each call is carried out by its REST twin: the message is converted into the REST body
//! (`proto::convert`), and the request — with the caller's `authorization`,
//! `idempotency-key`, `x-request-id` and `traceparent` metadata as headers — goes through the
//! bff's own router in process, so the token check, rate limit, roles, idempotent replays,
//! path and query checks, edge layers (in-flight limit, timeout, body limit) and the
//! service's validation are the REST API's, not a copy of them. The answer converts back
//! into a message, or a problem into a `google.rpc.Status` ([`status`]). Decision 0021.

mod status;

use std::convert::Infallible;

use axum::{
    Router,
    body::Body,
    extract::FromRequestParts,
    http::{self, HeaderMap, HeaderName, Method, header},
};
use proto::{
    convert,
    v1::{
        self,
        inbox_server::{Inbox, InboxServer},
        notifications_server::{Notifications, NotificationsServer},
        topics_server::{Topics, TopicsServer},
    },
};
use serde::de::DeserializeOwned;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap, server::NamedService};
use tower::ServiceExt;

use crate::{AppState, rate_limit::Caller, routes::ROUTES};

/// Metadata passed on to the REST route as headers.
const PASSED_METADATA: [&str; 4] = [
    "authorization",
    common::idempotency::HEADER,
    common::telemetry::REQUEST_ID,
    common::telemetry::TRACEPARENT,
];
/// Response headers returned as metadata.
const RETURNED_HEADERS: [&str; 2] = [common::telemetry::REQUEST_ID, common::idempotency::REPLAYED];

/// Adds the gRPC services to `rest` (the bff's complete REST router, edge layers included),
/// which also carries their calls out.
///
/// The REST body limit (`body_limit_bytes`) applies to each call's JSON twin, so an oversized
/// message gets the REST API's `payload_too_large` (RESOURCE_EXHAUSTED with its ErrorInfo).
/// tonic refuses to decode a message four times that size (at least the batch route's
/// limit, for `SendBatch`), which bounds the memory one call can take before its twin is built; that refusal (tonic's OUT_OF_RANGE) is answered as
/// the same `payload_too_large`.
pub fn mount(rest: Router, state: AppState, body_limit_bytes: usize) -> Router {
    let api = NotificationsServer::new(Grpc {
        rest: rest.clone(),
        state: state.clone(),
    })
    .max_decoding_message_size(
        body_limit_bytes
            .saturating_mul(4)
            .max(api::notifications::MAX_BATCH_BYTES),
    );
    let inbox = InboxServer::new(Grpc {
        rest: rest.clone(),
        state: state.clone(),
    });
    let topics = TopicsServer::new(Grpc {
        rest: rest.clone(),
        state,
    })
    .max_decoding_message_size(
        body_limit_bytes
            .saturating_mul(4)
            .max(api::topics::MAX_SUBSCRIBERS_BYTES),
    );
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor set compiled by build.rs is valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the descriptor set compiled by build.rs is valid");
    let path = path_of(&api);
    let api = adapt(api).map_response(move |resp| too_large_as_problem(resp, body_limit_bytes));
    let topics_path = path_of(&topics);
    let topics =
        adapt(topics).map_response(move |resp| too_large_as_problem(resp, body_limit_bytes));
    let inbox_path = path_of(&inbox);
    let inbox = adapt(inbox).map_response(move |resp| too_large_as_problem(resp, body_limit_bytes));
    rest.route_service(&path, api)
        .route_service(&topics_path, topics)
        .route_service(&inbox_path, inbox)
        .route_service(&path_of(&reflection), adapt(reflection))
        .route_service(&path_of(&reflection_alpha), adapt(reflection_alpha))
}

fn path_of<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*rest}}", S::NAME)
}

/// tonic's own refusal of a message over its decoding limit (the only OUT_OF_RANGE this API
/// answers: no REST problem maps to it) as the REST API's `payload_too_large`.
fn too_large_as_problem(
    resp: http::Response<tonic::body::Body>,
    body_limit_bytes: usize,
) -> http::Response<tonic::body::Body> {
    let code = resp
        .headers()
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()));
    if code != Some(Code::OutOfRange) {
        return resp;
    }
    status::from_error(
        common::problem::ApiError::payload_too_large(body_limit_bytes),
        &MetadataMap::new(),
    )
    .into_http()
}

/// A tonic service as an axum route service.
fn adapt<S>(
    svc: S,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<tonic::body::Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    svc.map_request(|req: http::Request<Body>| req.map(tonic::body::Body::new))
}

#[derive(Clone)]
struct Grpc {
    rest: Router,
    state: AppState,
}

/// A REST route's answer, on its way back to a gRPC caller.
struct Answer {
    status: http::StatusCode,
    headers: HeaderMap,
    body: axum::body::Bytes,
}

impl Grpc {
    /// `method path` through the REST router, as the caller.
    async fn call(
        &self,
        meta: &MetadataMap,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Status> {
        let mut req = http::Request::builder().method(method).uri(path);
        for name in PASSED_METADATA {
            if let Some(v) = meta.get(name).and_then(|v| v.to_str().ok()) {
                req = req.header(name, v);
            }
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or_default()))
            .map_err(|e| Status::invalid_argument(format!("metadata that is not a header: {e}")))?;
        let resp = match self.rest.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
            .await
            .map_err(|e| Status::internal(format!("reading the answer: {e}")))?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// What a REST caller with this metadata would be answered before the body is read:
    /// 401, 429 or 403 — so a request that does not convert tells a caller without the role
    /// nothing about its input, as over REST.
    async fn authorise(
        &self,
        meta: &MetadataMap,
        method: Method,
        path: &str,
    ) -> Result<(), Status> {
        let route = ROUTES
            .iter()
            .find(|r| r.method.method() == method && r.path == path)
            .expect("every gRPC method has a REST twin in the route table");
        let mut parts = http::Request::builder()
            .header(
                header::AUTHORIZATION,
                meta.get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
            )
            .body(())
            .expect("a request of valid header values")
            .into_parts()
            .0;
        let checked = match Caller::from_request_parts(&mut parts, &self.state).await {
            Ok(caller) => caller.require(route.roles),
            Err(e) => Err(e),
        };
        checked.map_err(|e| status::from_error(e, meta))
    }

    /// The message of a 2xx answer, or the problem as a status.
    fn reply<T: DeserializeOwned, M>(
        answer: Answer,
        convert: impl FnOnce(T) -> M,
    ) -> Result<Response<M>, Status> {
        if !answer.status.is_success() {
            return Err(status::from_answer(
                answer.status,
                &answer.headers,
                &answer.body,
            ));
        }
        let value: T = serde_json::from_slice(&answer.body).map_err(|e| {
            Status::internal(format!("an answer that is not the documented body: {e}"))
        })?;
        let mut resp = Response::new(convert(value));
        for name in RETURNED_HEADERS {
            if let Some(v) = answer
                .headers
                .get(HeaderName::from_static(name))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                resp.metadata_mut().insert(name, v);
            }
        }
        Ok(resp)
    }
}

/// `/v1/notifications/{id}` with the id as one path segment, whatever it holds: the route
/// checks it (after the caller's role) like any REST caller's.
fn notification_path(id: &str, suffix: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    format!("/v1/notifications/{id}{suffix}")
}

/// `/v1/topics/{key}…` with the key as one path segment, whatever it holds: the route checks
/// it like any REST caller's.
fn topic_path(key: &str, suffix: &str) -> String {
    let key = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
    format!("/v1/topics/{key}{suffix}")
}

impl Grpc {
    /// `PUT` or `DELETE /v1/topics/{key}/subscribers`.
    async fn subscribers(
        &self,
        request: Request<v1::SubscribersRequest>,
        method: Method,
    ) -> Result<Response<v1::SubscribersChanged>, Status> {
        let (meta, _, message) = request.into_parts();
        let path = topic_path(&message.key, "/subscribers");
        let body = match convert::subscribers_body(&message) {
            Ok(body) => body,
            Err(errors) => {
                self.authorise(&meta, method, "/v1/topics/{key}/subscribers")
                    .await?;
                return Err(status::invalid(errors, &meta));
            }
        };
        let body = serde_json::to_vec(&body).map_err(|e| Status::internal(e.to_string()))?;
        let answer = self.call(&meta, method, &path, Some(body)).await?;
        Self::reply(answer, convert::subscribers_changed)
    }
}

/// `/v1/me/inbox/{id}/{verb}` with the id as one path segment, whatever it holds.
fn inbox_item_path(id: &str, verb: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    format!("/v1/me/inbox/{id}/{verb}")
}

#[tonic::async_trait]
impl Inbox for Grpc {
    async fn list(
        &self,
        request: Request<v1::ListInboxRequest>,
    ) -> Result<Response<v1::InboxPage>, Status> {
        let (meta, _, message) = request.into_parts();
        let query = convert::inbox_query(&message);
        let path = if query.is_empty() {
            "/v1/me/inbox".to_owned()
        } else {
            format!("/v1/me/inbox?{query}")
        };
        let answer = self.call(&meta, Method::GET, &path, None).await?;
        Self::reply(answer, convert::inbox_page)
    }

    async fn counts(
        &self,
        request: Request<v1::InboxCountsRequest>,
    ) -> Result<Response<v1::InboxCounts>, Status> {
        let (meta, _, _) = request.into_parts();
        let answer = self
            .call(&meta, Method::GET, "/v1/me/inbox/counts", None)
            .await?;
        Self::reply(answer, convert::inbox_counts)
    }

    async fn mark(
        &self,
        request: Request<v1::MarkRequest>,
    ) -> Result<Response<v1::Marked>, Status> {
        let (meta, _, message) = request.into_parts();
        let verb = match convert::mark_verb(message.mark) {
            Ok(v) => v,
            Err(errors) => {
                self.authorise(&meta, Method::POST, "/v1/me/inbox/{id}/read")
                    .await?;
                return Err(status::invalid(errors, &meta));
            }
        };
        let path = inbox_item_path(&message.id, verb);
        let answer = self.call(&meta, Method::POST, &path, None).await?;
        Self::reply(answer, convert::marked)
    }

    async fn read_all(
        &self,
        request: Request<v1::InboxAllRequest>,
    ) -> Result<Response<v1::InboxCounts>, Status> {
        let (meta, _, _) = request.into_parts();
        let answer = self
            .call(&meta, Method::POST, "/v1/me/inbox/read-all", None)
            .await?;
        Self::reply(answer, convert::inbox_counts)
    }

    async fn seen_all(
        &self,
        request: Request<v1::InboxAllRequest>,
    ) -> Result<Response<v1::InboxCounts>, Status> {
        let (meta, _, _) = request.into_parts();
        let answer = self
            .call(&meta, Method::POST, "/v1/me/inbox/seen-all", None)
            .await?;
        Self::reply(answer, convert::inbox_counts)
    }
}

#[tonic::async_trait]
impl Topics for Grpc {
    async fn put(
        &self,
        request: Request<v1::PutTopicRequest>,
    ) -> Result<Response<v1::Topic>, Status> {
        let (meta, _, message) = request.into_parts();
        let body = serde_json::to_vec(&convert::topic_body(&message))
            .map_err(|e| Status::internal(e.to_string()))?;
        let path = topic_path(&message.key, "");
        let answer = self.call(&meta, Method::PUT, &path, Some(body)).await?;
        Self::reply(answer, convert::topic)
    }

    async fn get(
        &self,
        request: Request<v1::GetTopicRequest>,
    ) -> Result<Response<v1::Topic>, Status> {
        let (meta, _, message) = request.into_parts();
        let path = topic_path(&message.key, "");
        let answer = self.call(&meta, Method::GET, &path, None).await?;
        Self::reply(answer, convert::topic)
    }

    async fn subscribe(
        &self,
        request: Request<v1::SubscribersRequest>,
    ) -> Result<Response<v1::SubscribersChanged>, Status> {
        self.subscribers(request, Method::PUT).await
    }

    async fn unsubscribe(
        &self,
        request: Request<v1::SubscribersRequest>,
    ) -> Result<Response<v1::SubscribersChanged>, Status> {
        self.subscribers(request, Method::DELETE).await
    }
}

#[tonic::async_trait]
impl Notifications for Grpc {
    async fn send(
        &self,
        request: Request<v1::SendRequest>,
    ) -> Result<Response<v1::Notification>, Status> {
        const PATH: &str = "/v1/notifications";
        let (meta, _, message) = request.into_parts();
        let body = match convert::send_body(message) {
            Ok(body) => body,
            Err(errors) => {
                self.authorise(&meta, Method::POST, PATH).await?;
                return Err(status::invalid(errors, &meta));
            }
        };
        let body = serde_json::to_vec(&body).map_err(|e| Status::internal(e.to_string()))?;
        let answer = self.call(&meta, Method::POST, PATH, Some(body)).await?;
        Self::reply(answer, convert::notification)
    }

    async fn send_batch(
        &self,
        request: Request<v1::SendBatchRequest>,
    ) -> Result<Response<v1::SendBatchResponse>, Status> {
        const PATH: &str = "/v1/notifications/batch";
        let (meta, _, message) = request.into_parts();
        if let Err(e) = api::notifications::check_batch_size(
            message.notifications.len(),
            convert::batch_recipients(&message),
        ) {
            self.authorise(&meta, Method::POST, PATH).await?;
            return Err(status::invalid(vec![e], &meta));
        }
        // Items that do not convert are answered in place; the rest go to the REST twin, and
        // its results are put back between them in the items' order.
        let items = convert::batch_items(message);
        let forwarded: Vec<&serde_json::Value> =
            items.iter().filter_map(|i| i.as_ref().ok()).collect();
        let mut returned = MetadataMap::new();
        let mut answered = if forwarded.is_empty() {
            self.authorise(&meta, Method::POST, PATH).await?;
            Vec::new()
        } else {
            let body = serde_json::to_vec(&serde_json::json!({ "notifications": forwarded }))
                .map_err(|e| Status::internal(e.to_string()))?;
            let answer = self.call(&meta, Method::POST, PATH, Some(body)).await?;
            let answer: Response<api::notifications::BatchAnswer> = Self::reply(answer, |a| a)?;
            let (answer_meta, answer, _) = answer.into_parts();
            returned = answer_meta;
            if answer.results.len() != forwarded.len() {
                return Err(Status::internal(format!(
                    "{} results for {} items",
                    answer.results.len(),
                    forwarded.len()
                )));
            }
            answer.results
        }
        .into_iter();
        let results = items
            .into_iter()
            .map(|item| match item {
                Ok(_) => answered.next().expect("counted above"),
                Err(errors) => api::notifications::BatchResult {
                    status: 422,
                    id: None,
                    problem: Some(common::problem::ApiError::validation(errors).problem()),
                },
            })
            .map(convert::batch_result)
            .collect();
        let mut resp = Response::new(v1::SendBatchResponse { results });
        *resp.metadata_mut() = returned;
        Ok(resp)
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::Notification>, Status> {
        let (meta, _, message) = request.into_parts();
        let path = notification_path(&message.id, "");
        let answer = self.call(&meta, Method::GET, &path, None).await?;
        Self::reply(answer, convert::notification)
    }

    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::Notification>, Status> {
        let (meta, _, message) = request.into_parts();
        let path = notification_path(&message.id, "/cancel");
        let answer = self.call(&meta, Method::POST, &path, None).await?;
        Self::reply(answer, convert::notification)
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        const PATH: &str = "/v1/notifications";
        let (meta, _, message) = request.into_parts();
        let query = match convert::list_query(&message) {
            Ok(q) => q,
            Err(errors) => {
                self.authorise(&meta, Method::GET, PATH).await?;
                return Err(status::invalid(errors, &meta));
            }
        };
        let path = if query.is_empty() {
            PATH.to_owned()
        } else {
            format!("{PATH}?{query}")
        };
        let answer = self.call(&meta, Method::GET, &path, None).await?;
        Self::reply(answer, convert::list_response)
    }

    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        let (meta, _, message) = request.into_parts();
        let query = convert::deliveries_query(&message);
        let mut path = notification_path(&message.id, "/deliveries");
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let answer = self.call(&meta, Method::GET, &path, None).await?;
        Self::reply(answer, convert::deliveries_response)
    }
}
