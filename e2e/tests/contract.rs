//! The bff's route table against the services themselves: every route it forwards exists on
//! its service with that method, and every route that documents a request body is refused
//! with 422 when the body carries a field the document does not list (the document says
//! `additionalProperties: false` because the services' types deny unknown fields — this
//! checks the services agree). The schemas themselves are the services' own types (`api`).

use bff::routes::{Handler, ROUTES};
use common::auth::Role;
use e2e::{Options, Service, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_route_exists_on_its_service_and_takes_the_documented_body() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let user = stack
        .register_user("contract@example.com")
        .await
        .unwrap()
        .to_string();
    let mut checked = 0;
    for route in ROUTES.iter() {
        let (Some(upstream), Handler::Forward | Handler::Send) = (route.upstream, route.handler)
        else {
            continue;
        };
        let service = match upstream {
            bff::upstream::Service::Users => Service::Users,
            bff::upstream::Service::Notifications => Service::Notifications,
        };
        let sub = match route.roles[0] {
            Role::User => user.as_str(),
            Role::Service => "billing",
            Role::Admin => "admin",
        };
        let token = stack.token(route.roles[0], sub);
        let path = route
            .path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{name}", "contract-check");
        let url = format!("http://{}{path}", stack.addr(service));
        let mut req = stack
            .http
            .request(route.method.method(), url)
            .bearer_auth(token);
        if route.request.is_some() {
            req = req.json(&serde_json::json!({ "not_in_the_document": 1 }));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let what = format!("{} {} on {service:?}", route.method.method(), route.path);
        assert_ne!(
            status, 405,
            "{what}: the service has no such method: {body}"
        );
        assert!(
            !(status == 404 && body["detail"] == "no route matches this path"),
            "{what}: the service has no such route"
        );
        if route.request.is_some() {
            assert_eq!(
                status, 422,
                "{what}: an undocumented field was not refused: {body}"
            );
            assert!(
                body.to_string().contains("not_in_the_document"),
                "{what}: the 422 does not name the field: {body}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 19, "checked only {checked} routes");
}
