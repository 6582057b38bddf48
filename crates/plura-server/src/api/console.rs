//! The web console: a few static files built into the binary (nothing fetched from elsewhere),
//! served with a content security policy that lets only them run.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::Path;

/// Scripts and styles from this server only, no inline code, no framing: even if some
/// agent-supplied text reached the page as markup, it could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// A file of `assets/console`, embedded, with its content type.
macro_rules! asset {
    ($file:literal, $kind:expr) => {
        (
            $file,
            $kind,
            include_str!(concat!("../../assets/console/", $file)),
        )
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const FILES: &[(&str, &str, &str)] = &[
    asset!("app.js", JS),
    asset!("i18n.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("admin.js", JS),
    asset!("people.js", JS),
    asset!("app.css", "text/css; charset=utf-8"),
];

pub async fn index() -> Response {
    file(
        "text/html; charset=utf-8",
        include_str!("../../assets/console/index.html"),
    )
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => file(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small and versioned with the binary: revalidate so an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
