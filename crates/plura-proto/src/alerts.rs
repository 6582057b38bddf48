//! Alerts by webhook: what is alerted, the webhooks an admin sets, the body a JSON webhook
//! receives, and the record of each delivery.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::rules::{FieldError, field_error};
use crate::text_enum::text_enum;
use crate::{Agent, Timestamp, UncoveredInstance};

/// Longest webhook URL taken.
pub const MAX_URL_LEN: usize = 2048;
/// A signing secret has at least this many characters (as a password of 96 random bits would).
pub const MIN_SECRET_LEN: usize = 16;
pub const MAX_SECRET_LEN: usize = 256;

/// What an alert tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Stopped without saying goodbye: its heartbeats stopped (a crash, a kill, an instance
    /// terminated without a logout).
    AgentStopped,
    /// Its identity was taken over by another machine, source address or kind.
    AgentTakenOver,
    /// An agent that had stopped without a goodbye is back.
    AgentBack,
    /// A new identity was refused: the fleet holds the agents `--max-agents` allows. Alerted
    /// once each time the fleet reaches its limit.
    RegistrationRefused,
    /// An agent stopped without a goodbye while its EC2 instance runs: killed, crashed or cut
    /// off (`plura-eni watch` asked the cloud).
    AgentSilentOnRunningInstance,
    /// Agents stopped with their instances (terminated or stopped): expected churn, sent only
    /// with `--alert-on-scale-in`.
    AgentInstanceGone,
    /// Instances of a watched Auto Scaling group that have had no running agent past the
    /// grace a new instance has.
    InstancesWithoutAgent,
}

text_enum!(AlertKind {
    AgentStopped => "agent_stopped",
    AgentTakenOver => "agent_taken_over",
    AgentBack => "agent_back",
    RegistrationRefused => "registration_refused",
    AgentSilentOnRunningInstance => "agent_silent_on_running_instance",
    AgentInstanceGone => "agent_instance_gone",
    InstancesWithoutAgent => "instances_without_agent",
});

/// How a webhook's body is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// An [`AlertMessage`].
    #[default]
    Json,
    /// Slack's incoming-webhook body: `{"text": …}`.
    Slack,
}

text_enum!(WebhookFormat { Json => "json", Slack => "slack" });

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet answered with a 2xx; tried again with backoff.
    Pending,
    Delivered,
    /// Not delivered within a day of tries; given up.
    Failed,
}

text_enum!(DeliveryState { Pending => "pending", Delivered => "delivered", Failed => "failed" });

/// A webhook as the API shows it: its URL with the path hidden (a Slack URL's path is its
/// secret), never its signing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Webhook {
    pub id: i64,
    /// Scheme, host and port; the path shows as `…`.
    pub url: String,
    pub format: WebhookFormat,
    /// `command line` (from `--alert-webhook`/`--alert-slack`, set again at every start), or
    /// the name of the admin who added it.
    pub origin: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}

/// A webhook an admin adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://`.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// The HMAC-SHA256 key the deliveries are signed with; one is made when none is given.
    #[serde(default)]
    pub secret: Option<String>,
}

impl NewWebhook {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_webhook_url(&self.url)?;
        match &self.secret {
            Some(secret) => validate_secret(secret),
            None => Ok(()),
        }
    }
}

/// A webhook URL: http or https, with a host, of printable characters.
pub fn validate_webhook_url(url: &str) -> Result<(), FieldError> {
    if url.len() > MAX_URL_LEN {
        return Err(field_error(
            "url",
            format!(
                "is {} bytes long; at most {MAX_URL_LEN} are allowed",
                url.len()
            ),
        ));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(field_error(
            "url",
            "must not contain spaces or control characters",
        ));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| field_error("url", "must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err(field_error(
            "url",
            "must name a host (and no user or password before it)",
        ));
    }
    Ok(())
}

/// A signing secret: long enough to resist guessing, printable.
pub fn validate_secret(secret: &str) -> Result<(), FieldError> {
    let len = secret.chars().count();
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
        return Err(field_error(
            "secret",
            format!("is {len} characters long; {MIN_SECRET_LEN} to {MAX_SECRET_LEN} are needed"),
        ));
    }
    if secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(field_error(
            "secret",
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// A webhook just added, with its signing secret: shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    pub secret: String,
}

/// One agent in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertedAgent {
    /// When it happened to this agent.
    pub at: Timestamp,
    /// What the agent's history says of it, e.g. `no heartbeat since …`.
    pub detail: String,
    /// For a takeover: whether the identity's previous holder was still running, i.e. two
    /// hosts claim it at once, which is suspicious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_was_running: Option<bool>,
    pub agent: Agent,
}

/// The body a JSON webhook receives. Many agents that stop (or come back) together are one
/// message: `count` says how many, `agents` names the first hundred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertMessage {
    pub event: AlertKind,
    pub count: u64,
    /// The same, for a person.
    pub text: String,
    pub agents: Vec<AlertedAgent>,
    /// For `instances_without_agent`: the instances, named as `agents` are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<AlertedInstance>,
    /// How many of `count` are not in `agents` (or `instances`).
    pub more: u64,
}

/// One instance in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AlertedInstance {
    pub at: Timestamp,
    /// Its Auto Scaling group.
    pub asg: String,
    pub instance: UncoveredInstance,
}

/// A delivery of an alert to a webhook, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Delivery {
    /// Sent as `X-Plura-Delivery`, so a receiver can drop a repeat.
    pub id: i64,
    pub webhook_id: i64,
    /// As in [`Webhook::url`].
    pub webhook_url: String,
    pub event: AlertKind,
    pub count: u64,
    pub text: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    /// When it is tried again, while pending.
    pub next_attempt_at: Option<Timestamp>,
    /// What the last failed try got: a status code or a connection error.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<Delivery>,
}

/// Hides all of a URL but its scheme, host and port.
pub fn redact_webhook_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hidden = if rest.len() > host.len() && rest[host.len()..] != *"/" {
        "/…"
    } else {
        ""
    };
    format!("{scheme}://{host}{hidden}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        for good in [
            "https://hooks.slack.com/services/T0/B0/xyz",
            "http://127.0.0.1:9000/hook",
            "https://example.com",
        ] {
            assert_eq!(validate_webhook_url(good), Ok(()), "{good}");
        }
        for (bad, problem) in [
            ("ftp://example.com", "must start with http"),
            ("https://", "must name a host"),
            ("https://user:pw@example.com/", "no user or password"),
            ("https://exa mple.com", "spaces"),
            ("https://example.com/\u{0}", "control"),
        ] {
            let e = validate_webhook_url(bad).unwrap_err();
            assert!(e.problem.contains(problem), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_must_be_long_and_printable() {
        assert!(validate_secret("0123456789abcdef").is_ok());
        assert!(validate_secret("short").is_err());
        assert!(validate_secret("0123456789abcdef ").is_err());
    }

    #[test]
    fn redacted_urls_keep_only_scheme_host_and_port() {
        assert_eq!(
            redact_webhook_url("https://hooks.slack.com/services/T0/B0/xyz"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_webhook_url("http://127.0.0.1:9000/"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            redact_webhook_url("http://127.0.0.1:9000?token=x"),
            "http://127.0.0.1:9000/…"
        );
    }

    #[test]
    fn kinds_read_back() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.as_str().parse::<AlertKind>(), Ok(*kind));
        }
        assert_eq!(
            serde_json::to_string(&AlertKind::AgentTakenOver).unwrap(),
            "\"agent_taken_over\""
        );
    }
}
