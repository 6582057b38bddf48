//! The agent's side of the wire API: login, heartbeat, logout, with each failure sorted by what
//! the agent should do about it.

use std::time::Duration;

use reqwest::StatusCode;

use plura_proto::config::AgentConfig;
use plura_proto::{ErrorBody, LoginRequest, LoginResponse};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server no longer knows this agent (deleted): log in again.
    #[error("the server does not know this agent any more")]
    Gone,
    /// The credential was not accepted: for the agent key, a newer login of this identity
    /// replaced it (log in again); for the enrollment token, the configuration is wrong.
    #[error("the server refused the credential: {0}")]
    Unauthorized(String),
    /// The server refused the request itself (bad token, bad field): retrying the same will
    /// not help until someone fixes the configuration.
    #[error("the server refused: {status} {message}")]
    Refused { status: StatusCode, message: String },
    /// Unreachable, timed out, or failing on its side: try again later.
    #[error("the server is unreachable or failing: {0}")]
    Unavailable(String),
    /// The server cannot serve now (its database is down, or too many calls) and said when to
    /// come back: not before then.
    #[error("the server asks to try again in {}s: {message}", retry_after.as_secs())]
    Busy {
        message: String,
        retry_after: Duration,
    },
    /// The TLS handshake failed: the server's certificate is not one the agent trusts (or the
    /// two share no TLS version). Retried, since a renewed certificate or a fixed `ca_file`
    /// mends it.
    #[error("no TLS connection: {0}; check ca_file and server_fingerprint in plura.conf")]
    Tls(String),
}

pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    /// The enrollment token, for logins only; afterwards the agent's own key.
    enrollment_token: String,
}

impl ServerClient {
    /// A client for the server `config` names, trusting what it says to trust.
    pub fn new(config: &AgentConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::trust::client_config(config.into())?)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("plura-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: config.server_url.trim_end_matches('/').to_string(),
            enrollment_token: config.enrollment_token.clone(),
        })
    }

    pub async fn login(&self, login: &LoginRequest) -> Result<LoginResponse, CallError> {
        let token = &self.enrollment_token;
        let response = self
            .post("/api/v1/agents/login", token, Some(login))
            .await?;
        response
            .json()
            .await
            .map_err(|e| CallError::Unavailable(format!("unreadable login answer: {e}")))
    }

    /// A heartbeat, or a logout (`action`), as the agent `agent_id` with its key.
    pub async fn as_agent(&self, agent_id: i64, key: &str, action: &str) -> Result<(), CallError> {
        let path = format!("/api/v1/agents/{agent_id}/{action}");
        self.post(&path, key, None::<&()>).await.map(drop)
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<reqwest::Response, CallError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| match tls_failure(&e) {
            Some(reason) => CallError::Tls(reason),
            None => CallError::Unavailable(without_url(e)),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.message)
            .unwrap_or(text);
        Err(match status {
            StatusCode::NOT_FOUND => CallError::Gone,
            StatusCode::UNAUTHORIZED => CallError::Unauthorized(message),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => match retry_after {
                Some(retry_after) => CallError::Busy {
                    message: format!("{status} {message}"),
                    retry_after,
                },
                None => CallError::Unavailable(format!("{status} {message}")),
            },
            _ => CallError::Refused { status, message },
        })
    }
}

impl CallError {
    /// How long the server asked to wait before the next try (none: zero).
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Busy { retry_after, .. } => *retry_after,
            _ => Duration::ZERO,
        }
    }
}

/// The `Retry-After` a server sent, in seconds (the form this server sends), capped at an hour
/// so that a wrong header cannot silence the agent for long.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(3600)))
}

/// Why the TLS handshake failed, when that is what `e` is.
fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                // The agent's own reasons (a pin that does not match) say themselves.
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                    other.0.to_string()
                }
                tls => tls.to_string(),
            });
        }
        // An I/O error hides the error it wraps from `source()` (and the connector wraps one
        // I/O error in another); look inside it.
        cause = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

/// reqwest's errors repeat the URL, and their first cause is often a bare "client error
/// (Connect)"; the log line around them already names the server, so this says what happened
/// and the deepest cause (a refused connection, or why a certificate is not trusted).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(deeper) = cause.and_then(std::error::Error::source) {
        cause = Some(deeper);
    }
    match cause {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_retry_after_in_seconds_is_taken_and_capped() {
        assert_eq!(
            retry_after(&with_retry_after("5")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after(&with_retry_after("86400")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(retry_after(&with_retry_after("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        let busy = CallError::Busy {
            message: "503".into(),
            retry_after: Duration::from_secs(5),
        };
        assert_eq!(busy.retry_after(), Duration::from_secs(5));
        assert_eq!(CallError::Gone.retry_after(), Duration::ZERO);
    }
}
