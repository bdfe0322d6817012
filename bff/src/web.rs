//! The pages people open in a browser, served by the bff itself (decision 0025): `/docs`
//! (Redoc over `/openapi.json`), `/app` (the preference center), `/console` (admins) and
//! `/demo/inbox` (a product page embedding the in-app feed, decision 0029), and the feed's
//! module at a stable URL for pages elsewhere (`/widget/inbox.js`).
//!
//! Every file a page loads is compiled into the binary and served from this origin at a
//! content-hashed URL (`/assets/<stem>.<hash>.<ext>`) with a year's immutable cache, so a new
//! release never meets a stale copy; pages themselves revalidate on every load (`ETag`). Each
//! page carries a Content-Security-Policy that lets nothing load from another origin.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

/// One file compiled in: its name in page templates, its bytes, its type, and whether it names
/// other assets (`{{asset:NAME}}`, rendered before it is hashed; those come earlier here).
struct Source {
    name: &'static str,
    bytes: &'static [u8],
    content_type: &'static str,
    names_assets: bool,
}

const JS: &str = "text/javascript; charset=utf-8";

const SOURCES: &[Source] = &[
    Source {
        name: "redoc.standalone.js",
        bytes: include_bytes!("../assets/vendor/redoc-2.5.4.standalone.js"),
        content_type: JS,
        names_assets: false,
    },
    Source {
        name: "common.css",
        bytes: include_bytes!("../assets/common.css"),
        content_type: "text/css; charset=utf-8",
        names_assets: false,
    },
    Source {
        name: "api.js",
        bytes: include_bytes!("../assets/api.js"),
        content_type: JS,
        names_assets: false,
    },
    Source {
        name: "ui.js",
        bytes: include_bytes!("../assets/ui.js"),
        content_type: JS,
        names_assets: false,
    },
    Source {
        name: "inbox.js",
        bytes: include_bytes!("../assets/inbox.js"),
        content_type: JS,
        names_assets: false,
    },
    Source {
        name: "demo.js",
        bytes: include_bytes!("../assets/demo/demo.js"),
        content_type: JS,
        names_assets: true,
    },
    Source {
        name: "app.js",
        bytes: include_bytes!("../assets/app/app.js"),
        content_type: JS,
        names_assets: true,
    },
    Source {
        name: "console.js",
        bytes: include_bytes!("../assets/console/console.js"),
        content_type: JS,
        names_assets: true,
    },
];

/// The pages: path and template.
const PAGES: &[(&str, &str)] = &[
    ("/docs", DOCS),
    ("/app", include_str!("../assets/app/index.html")),
    ("/console", include_str!("../assets/console/index.html")),
    ("/demo/inbox", include_str!("../assets/demo/index.html")),
];

/// The feed's module at a stable URL, for product pages that embed it (revalidated on every
/// load, so a release reaches them at once).
const WIDGET: &str = "/widget/inbox.js";

/// What a page may load: only this origin; inline styles for Redoc's styled components, and
/// `blob:` workers for its search.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self'; connect-src 'self'; \
                   worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

struct Asset {
    bytes: std::borrow::Cow<'static, [u8]>,
    content_type: &'static str,
    etag: String,
}

struct Page {
    html: String,
    etag: String,
}

/// The assets by their hashed file name and the pages, rendered once at start.
pub struct Web {
    assets: HashMap<String, Asset>,
    pages: HashMap<&'static str, Page>,
}

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Web {
    pub fn new() -> Self {
        let mut assets = HashMap::new();
        let mut urls = HashMap::new();
        for s in SOURCES {
            let bytes: std::borrow::Cow<'static, [u8]> = if s.names_assets {
                let text = std::str::from_utf8(s.bytes).expect("a text asset is UTF-8");
                render(text, &urls).into_bytes().into()
            } else {
                s.bytes.into()
            };
            let hash = digest(&bytes);
            let (stem, ext) = s
                .name
                .rsplit_once('.')
                .expect("an asset name has an extension");
            let file = format!("{stem}.{hash}.{ext}");
            urls.insert(s.name, format!("/assets/{file}"));
            assets.insert(
                file,
                Asset {
                    bytes,
                    content_type: s.content_type,
                    etag: format!("\"{hash}\""),
                },
            );
        }
        let pages = PAGES
            .iter()
            .map(|&(path, template)| {
                let html = render(template, &urls);
                let etag = format!("\"{}\"", digest(html.as_bytes()));
                (path, Page { html, etag })
            })
            .collect();
        Self { assets, pages }
    }
}

impl Default for Web {
    fn default() -> Self {
        Self::new()
    }
}

/// `template` with each `{{asset:NAME}}` replaced by that asset's hashed URL.
fn render(template: &str, urls: &HashMap<&'static str, String>) -> String {
    let mut out = template.to_owned();
    for (name, url) in urls {
        out = out.replace(&format!("{{{{asset:{name}}}}}"), url);
    }
    assert!(
        !out.contains("{{asset:"),
        "a page names an asset that is not compiled in"
    );
    out
}

/// Whether the request's `If-None-Match` names `etag`.
fn fresh(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn asset(
    State(web): State<Arc<Web>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(a) = web.assets.get(&file) else {
        return common::problem::ApiError::not_found("no such asset").into_response();
    };
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&a.etag).expect("a hex etag"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh(&headers, &a.etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        )],
        a.bytes.clone(),
    )
        .into_response()
}

fn page(web: &Web, path: &str, headers: &HeaderMap) -> Response {
    let p = &web.pages[path];
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(&p.etag).expect("a hex etag"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh(headers, &p.etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        p.html.clone(),
    )
        .into_response()
}

/// `/widget/inbox.js`: the feed's module, revalidated on every load.
async fn widget(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some((file, _)) = web.assets.iter().find(|(f, _)| f.starts_with("inbox.")) else {
        return common::problem::ApiError::not_found("no such asset").into_response();
    };
    let mut resp = asset(State(web.clone()), Path(file.clone()), headers).await;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `/assets/{file}`, `/widget/inbox.js` and every page of [`PAGES`] at its path.
pub fn router() -> Router {
    let mut router = Router::new()
        .route("/assets/{file}", get(asset))
        .route(WIDGET, get(widget));
    for &(path, _) in PAGES {
        router = router.route(
            path,
            get(
                move |State(web): State<Arc<Web>>, headers: HeaderMap| async move {
                    page(&web, path, &headers)
                },
            ),
        );
    }
    router.with_state(Arc::new(Web::new()))
}

const DOCS: &str = r#"<!doctype html>
<html lang="en"><head><title>notify API</title><meta charset="utf-8">
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="{{asset:redoc.standalone.js}}"></script>
<noscript>The raw document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_assets_by_their_content_hash() {
        let web = Web::new();
        let docs = &web.pages["/docs"].html;
        let file = web.assets.keys().find(|f| f.starts_with("redoc.")).unwrap();
        assert!(
            file.starts_with("redoc.standalone.") && file.ends_with(".js"),
            "{file}"
        );
        assert!(docs.contains(&format!("src=\"/assets/{file}\"")), "{docs}");
        assert!(
            !docs.contains("https://"),
            "nothing from another origin: {docs}"
        );
    }

    #[test]
    fn an_etag_list_matches_as_http_says() {
        let mut h = HeaderMap::new();
        assert!(!fresh(&h, "\"a\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"b\", \"a\""),
        );
        assert!(fresh(&h, "\"a\""));
        assert!(!fresh(&h, "\"c\""));
    }
}
