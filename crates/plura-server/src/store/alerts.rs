//! What the alerts' storage takes and answers: alerts waiting to be sent, webhooks, deliveries.

use async_trait::async_trait;
use plura_proto::{Agent, AlertKind, AlertedInstance, Delivery, Timestamp, WebhookFormat};

use super::{Actor, Result};

/// An alert as a change recorded it, waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    pub at: Timestamp,
    pub subject: AlertSubject,
    pub detail: String,
    /// For a takeover: whether the previous holder was still running.
    pub holder_running: Option<bool>,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertSubject {
    /// The agent as it was then.
    Agent(Box<Agent>),
    /// An instance with no agent.
    Instance(AlertedInstance),
}

/// A webhook with what sending to it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWebhook {
    pub id: i64,
    pub url: String,
    pub format: WebhookFormat,
    pub secret: String,
    pub origin: String,
    pub created_at: Timestamp,
}

/// A message for one webhook, made from waiting alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub webhook_id: i64,
    pub event: AlertKind,
    pub count: u64,
    pub text: String,
    pub body: String,
}

/// A delivery due to be tried, with its webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub id: i64,
    pub event: AlertKind,
    pub body: String,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub url: String,
    pub secret: String,
    /// Its webhook was set on the command line: the operator's own, not checked.
    pub from_command_line: bool,
}

/// How a try of a delivery went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Tried again at `next`.
    Retry {
        next: Timestamp,
        error: String,
    },
    /// Given up.
    Failed {
        error: String,
    },
}

/// Webhooks, and the alerts and deliveries on their way to them.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Records an alert no change of an agent carries (a refused registration): `agent` is
    /// the identity it concerns.
    async fn record_alert(
        &self,
        kind: AlertKind,
        agent: &Agent,
        detail: &str,
        at: Timestamp,
    ) -> Result<()>;

    async fn webhooks(&self) -> Result<Vec<StoredWebhook>>;

    /// Adds a webhook an admin (`by`) set; `audit_detail` is what the audit log says of it.
    async fn add_webhook(
        &self,
        url: &str,
        format: WebhookFormat,
        secret: &str,
        by: Actor<'_>,
        audit_detail: &str,
    ) -> Result<StoredWebhook>;

    /// Deletes a webhook for good (its URL and secret erased), with its audit record; answers
    /// whether there was one.
    async fn delete_webhook(&self, id: i64, by: Actor<'_>) -> Result<bool>;

    /// Makes the webhooks of `origin` exactly `hooks` (url, format), each signed with `secret`:
    /// the command line's, set again at every start.
    async fn set_webhooks_of(
        &self,
        origin: &str,
        hooks: &[(String, WebhookFormat)],
        secret: &str,
        at: Timestamp,
    ) -> Result<()>;

    /// Alerts not yet made into deliveries and not held past `now`, oldest first.
    async fn waiting_alerts(&self, now: Timestamp, limit: u32) -> Result<Vec<Alert>>;

    /// Queues `deliveries` and marks the `alerts` they were made from done, in one
    /// transaction.
    async fn queue_deliveries(
        &self,
        alerts: &[i64],
        deliveries: &[NewDelivery],
        at: Timestamp,
    ) -> Result<()>;

    /// Pending deliveries whose time has come, oldest first.
    async fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<DueDelivery>>;

    async fn attempted(&self, id: i64, at: Timestamp, attempt: &Attempt) -> Result<()>;

    /// The newest deliveries first, their webhook URLs whole (the caller hides them).
    async fn deliveries(&self, limit: u32) -> Result<Vec<Delivery>>;

    /// Deletes alerts made into deliveries, and deliveries done with, older than `cutoff`.
    async fn delete_alerts_before(&self, cutoff: Timestamp) -> Result<u64>;
}
