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
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secured(response)
}

/// A page of its own (a refused sign-in), styled as the console, with a link back to it.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · PLURA Fleet</title><link rel=\"stylesheet\" href=\"/console/app.css\">\
         </head><body><main class=\"signin notice\" data-testid=\"notice\"><h1>{title}</h1>\
         <p role=\"alert\">{message}</p><p><a href=\"/\">Back to the sign-in page</a></p></main>\
         </body></html>\n",
        title = escape(title),
        message = escape(message),
    );
    let mut response = (status, html).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secured(response)
}

/// `text` as HTML text: what a person's name or a provider's message holds stays text.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The console's protections on a response of its own.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
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
