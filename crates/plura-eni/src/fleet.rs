//! The watch's side of the PLURA server's API: the silent agents to ask EC2 about, and the
//! report of each round. It trusts the server as the agent does (the system's store, a private
//! CA, a pin) and sends its operator token over plain http only to this host.

use std::time::Duration;

use plura_agent::trust::{self, Trust};
use plura_proto::{
    CloudReport, CloudReportOutcome, ErrorBody, MAX_VERDICTS_PER_REPORT, SilentAgent,
    SilentAgentList,
};

use crate::error::{EniError, chain};

/// Silent agents asked for at a time.
const PAGE: usize = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct FleetClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl FleetClient {
    pub fn new(server: &str, token: String, trust: Trust<'_>) -> Result<Self, EniError> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("https://") && !base.starts_with("http://") {
            return Err(EniError::Invalid(format!(
                "--server {server:?}: must be an https:// URL, e.g. https://plura.example.com"
            )));
        }
        if plura_proto::config::is_plain_http_off_loopback(&base) {
            return Err(EniError::Invalid(format!(
                "--server {server:?}: plain http:// would send the operator token in the clear; \
                 use https:// (only a server on this host may be reached over http://)"
            )));
        }
        if token.trim().is_empty() || token.contains(char::is_whitespace) {
            return Err(EniError::Invalid(
                "the operator token (PLURA_TOKEN or --token-file) is empty or holds spaces".into(),
            ));
        }
        let tls = trust::client_config(trust).map_err(|e| EniError::Invalid(format!("{e:#}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("plura-eni-watch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EniError::Invalid(format!("an HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The agents stopped without a goodbye on an EC2 instance whose verdict is not settled, as
    /// many as one report takes.
    pub async fn silent_agents(&self) -> Result<Vec<SilentAgent>, EniError> {
        let mut agents: Vec<SilentAgent> = Vec::new();
        loop {
            let after = agents.last().map_or(0, |a| a.agent_id);
            let path = format!("/api/v1/cloud/silent?after={after}&limit={PAGE}");
            let page: SilentAgentList = self.call(self.http.get(self.url(&path)), &path).await?;
            let full = page.items.len() == PAGE;
            agents.extend(page.items);
            if !full || agents.len() >= MAX_VERDICTS_PER_REPORT {
                agents.truncate(MAX_VERDICTS_PER_REPORT);
                return Ok(agents);
            }
        }
    }

    pub async fn report(&self, report: &CloudReport) -> Result<CloudReportOutcome, EniError> {
        let path = "/api/v1/cloud/report";
        self.call(self.http.post(self.url(path)).json(report), path)
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, EniError> {
        let failed = |why: String| EniError::Server {
            server: self.base.clone(),
            why: format!("{path}: {why}"),
        };
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            let why = chain(&e);
            // The same words as the agent's, for the same cause.
            if why.contains("certificate") {
                failed(format!(
                    "{why}; the server is not trusted: check --ca-file and \
                         --server-fingerprint"
                ))
            } else {
                failed(why)
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or(body);
            return Err(failed(format!("{status}: {message}")));
        }
        response
            .json()
            .await
            .map_err(|e| failed(format!("an answer that cannot be read: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str, token: &str) -> Result<FleetClient, EniError> {
        FleetClient::new(server, token.into(), Trust::default())
    }

    #[test]
    fn the_token_travels_in_the_clear_only_to_this_host() {
        let refused = client("http://plura.example.com", "plura_x").err().unwrap();
        assert!(refused.to_string().contains("in the clear"), "{refused}");
        for server in [
            "https://plura.example.com/",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(client(server, "plura_x").is_ok(), "{server}");
        }
        let refused = client("ftp://plura.example.com", "plura_x").err().unwrap();
        assert!(refused.to_string().contains("https://"), "{refused}");
        for token in ["", " ", "plura x"] {
            let refused = client("https://plura.example.com", token).err().unwrap();
            assert!(
                refused.to_string().contains("token"),
                "{token:?}: {refused}"
            );
        }
    }
}
