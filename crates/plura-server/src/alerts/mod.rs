//! Alerts by webhook. A change that stops an agent without a goodbye, takes over an identity or
//! brings a lost agent back records an alert in its own transaction. On the server that leads
//! (one at a time on a shared database), each tick of the fleet wakes the alerter: it makes the
//! waiting alerts into one message per kind and one delivery per webhook, and sends the
//! deliveries that are due, retrying with backoff. Deliveries are in the database, so a restart
//! loses none; a delivery may arrive twice (a leader that dies mid-send), and carries its id for
//! that.

pub mod destinations;
pub mod message;
pub mod send;

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use plura_proto::{
    CreatedWebhook, Delivery, NewWebhook, Timestamp, Webhook, WebhookFormat, redact_webhook_url,
};

use crate::metrics::{Metrics, OutcomeLabel};
use crate::secret;
use crate::store::{self, Actor, Attempt, Doing, NewDelivery, Store, StoredWebhook};
pub use destinations::Destinations;

/// Alerts made into messages at a time.
const ALERTS_PER_ROUND: u32 = 10_000;
/// Deliveries tried in one round, and how many of them at once.
const DELIVERIES_PER_ROUND: u32 = 64;
const SENDS_AT_ONCE: usize = 8;
/// The origin of the webhooks the command line sets.
pub const COMMAND_LINE: &str = "command line";

pub struct Alerter {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clients: send::Clients,
    /// Notified by the fleet's tick while this server leads.
    due: Arc<Notify>,
}

impl Alerter {
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        due: Arc<Notify>,
        destinations: Destinations,
    ) -> Self {
        Self {
            store,
            metrics,
            clients: send::Clients::new(destinations),
            due,
        }
    }

    /// Where webhooks added through the API may point.
    pub fn destinations(&self) -> Destinations {
        self.clients.destinations()
    }

    /// A round each time the fleet's tick says so, until `shutdown`. A delivery cut off by the
    /// shutdown stays pending, and goes after the next start.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.due.notified() => {}
            }
            let round = tokio::select! {
                () = shutdown.cancelled() => return,
                round = self.round() => round,
            };
            if let Err(e) = round {
                self.metrics.database_failures.inc();
                tracing::warn!("alert deliveries failed, will retry: {e}");
            }
        }
    }

    /// Makes the waiting alerts into deliveries, then sends those that are due.
    async fn round(&self) -> store::Result<()> {
        loop {
            let alerts = self
                .store
                .waiting_alerts(Timestamp::now(), ALERTS_PER_ROUND)
                .await
                .doing(|| "reading the alerts waiting to be sent".into())?;
            if alerts.is_empty() {
                break;
            }
            let hooks = self
                .store
                .webhooks()
                .await
                .doing(|| "reading the webhooks to deliver to".into())?;
            let deliveries: Vec<NewDelivery> = message::messages(&alerts)
                .iter()
                .flat_map(|message| {
                    hooks.iter().map(|hook| NewDelivery {
                        webhook_id: hook.id,
                        event: message.event,
                        count: message.count,
                        text: message.text.clone(),
                        body: message::body(message, hook.format),
                    })
                })
                .collect();
            self.store
                .queue_deliveries(&ids(&alerts), &deliveries, Timestamp::now())
                .await
                .doing(|| format!("queueing {} deliveries", deliveries.len()))?;
            if alerts.len() < ALERTS_PER_ROUND as usize {
                break;
            }
        }
        let due = self
            .store
            .due_deliveries(Timestamp::now(), DELIVERIES_PER_ROUND)
            .await?;
        let mut tries = futures::stream::iter(due)
            .map(|delivery| async move {
                let attempt = send::send(&self.clients, &delivery, Timestamp::now()).await;
                (delivery, attempt)
            })
            .buffer_unordered(SENDS_AT_ONCE);
        while let Some((delivery, attempt)) = tries.next().await {
            let (outcome, error) = match &attempt {
                Attempt::Delivered => ("delivered", None),
                Attempt::Retry { error, .. } => ("retried", Some(error)),
                Attempt::Failed { error } => ("failed", Some(error)),
            };
            if let Some(error) = error {
                tracing::warn!(
                    delivery = delivery.id,
                    "an alert delivery {outcome}: {error}"
                );
            }
            self.metrics
                .alert_deliveries
                .get_or_create(&OutcomeLabel { outcome })
                .inc();
            self.store
                .attempted(delivery.id, Timestamp::now(), &attempt)
                .await
                .doing(|| format!("recording a try of delivery {}", delivery.id))?;
        }
        Ok(())
    }

    pub async fn webhooks(&self) -> store::Result<Vec<Webhook>> {
        let hooks = self
            .store
            .webhooks()
            .await
            .doing(|| "reading the webhooks".into())?;
        Ok(hooks.iter().map(shown).collect())
    }

    /// Adds a webhook (with a new secret unless one is given); answers it with the secret,
    /// which is shown only then.
    pub async fn add_webhook(
        &self,
        new: &NewWebhook,
        actor: &str,
    ) -> store::Result<CreatedWebhook> {
        let secret = new
            .secret
            .clone()
            .unwrap_or_else(|| secret::new_token("plura_whsec"));
        let by = Actor {
            name: actor,
            at: Timestamp::now(),
        };
        let detail = format!("{} ({})", redact_webhook_url(&new.url), new.format);
        let stored = self
            .store
            .add_webhook(&new.url, new.format, &secret, by, &detail)
            .await
            .doing(|| format!("adding a webhook for {actor}"))?;
        let shown = shown(&stored);
        tracing::info!(webhook = stored.id, url = %shown.url, "{actor} added a webhook");
        Ok(CreatedWebhook {
            webhook: shown,
            secret,
        })
    }

    pub async fn delete_webhook(&self, id: i64, actor: &str) -> store::Result<bool> {
        let by = Actor {
            name: actor,
            at: Timestamp::now(),
        };
        let deleted = self
            .store
            .delete_webhook(id, by)
            .await
            .doing(|| format!("deleting webhook {id} for {actor}"))?;
        if deleted {
            tracing::info!(webhook = id, "{actor} deleted a webhook");
        }
        Ok(deleted)
    }

    /// The newest deliveries first.
    pub async fn deliveries(&self, limit: u32) -> store::Result<Vec<Delivery>> {
        let mut deliveries = self
            .store
            .deliveries(limit)
            .await
            .doing(|| "reading the deliveries".into())?;
        for delivery in &mut deliveries {
            delivery.webhook_url = redact_webhook_url(&delivery.webhook_url);
        }
        Ok(deliveries)
    }
}

fn ids(alerts: &[store::Alert]) -> Vec<i64> {
    alerts.iter().map(|alert| alert.id).collect()
}

/// A webhook as the API shows it.
fn shown(hook: &StoredWebhook) -> Webhook {
    Webhook {
        id: hook.id,
        url: redact_webhook_url(&hook.url),
        format: hook.format,
        origin: hook.origin.clone(),
        created_at: hook.created_at,
    }
}

/// The webhooks the command line sets: JSON ones and Slack ones, signed with `secret`.
pub async fn set_command_line_webhooks(
    store: &dyn Store,
    json: &[String],
    slack: &[String],
    secret: &str,
) -> store::Result<()> {
    let hooks: Vec<(String, WebhookFormat)> = json
        .iter()
        .map(|url| (url.clone(), WebhookFormat::Json))
        .chain(slack.iter().map(|url| (url.clone(), WebhookFormat::Slack)))
        .collect();
    store
        .set_webhooks_of(COMMAND_LINE, &hooks, secret, Timestamp::now())
        .await
}
