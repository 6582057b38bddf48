//! The test harness: a real plura-server on a random loopback port, over a fresh SQLite file or a
//! fresh PostgreSQL database, and an HTTP client that talks to it as agents and people do.
//! Shared by the integration tests of every crate and by the benchmarks.

pub mod balancer;
mod database;
pub mod imds;
pub mod link;
pub mod private_postgres;
pub mod process;
pub mod receiver;
pub mod served;
mod server;
pub mod tls;

pub use database::{DEFAULT_PG_URL, Database, Db};
pub use server::{StoppedServer, TestServer, fast_policy, test_limits};

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use plura_proto::{ErrorBody, LoginRequest};

/// Polls `check` (every 100 ms) until it answers something, for at most `limit`.
pub async fn within<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the unlabelled metric `name` in a Prometheus text exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.parse().ok())?
    })
}

/// Polls `check` until it answers something; panics, saying `what` did not happen, after
/// `limit`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    check: impl FnMut() -> F,
) -> T {
    within(limit, check)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// A login as the agent of `ip` and `hostname` would send it (a WAF on Ubuntu).
pub fn login(ip: &str, hostname: &str) -> LoginRequest {
    LoginRequest {
        ip: ip.into(),
        hostname: hostname.into(),
        machine_id: None,
        version: "5.0.1".into(),
        os: "Ubuntu 24.04".into(),
        kind: "waf".into(),
        cloud: Default::default(),
    }
}

pub async fn json_ok<T: DeserializeOwned>(response: reqwest::Response) -> T {
    let status = response.status();
    let text = response.text().await.expect("a body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the expected JSON ({e}): {text}"))
}

/// Checks the response's content type starts with `expected` (parameters may follow).
pub fn assert_content_type(response: &reqwest::Response, expected: &str) {
    let got = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        got.starts_with(expected),
        "content type {got:?}, not {expected}"
    );
}

/// Checks the answer is the JSON error the API promises, with this status and code.
pub async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    let got = response.status();
    let text = response.text().await.expect("a body");
    assert_eq!(got, status, "body: {text}");
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
    assert_eq!(body.error, code, "{text}");
    assert!(!body.message.is_empty(), "an error says what went wrong");
    body
}

/// Declares each named scenario (an `async fn(Db)`) as one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::Db::Sqlite).await
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::Db::Postgres).await
            })+
        }
    };
}

/// `prefix` and a number no other call in this process gets: credential names are unique.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n}")
}
