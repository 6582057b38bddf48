//! Alerts: recorded by the change that causes them, in its transaction (an outbox, so a crash
//! cannot lose one); webhooks; and the deliveries the leading server makes of the alerts.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use plura_proto::{
    AlertKind, AuditAction, Delivery, DeliveryState, Event, Timestamp, WebhookFormat,
};

use super::SqlStore;
use super::rows::{self, placeholders, rows_per_statement};
use crate::alerts::COMMAND_LINE;
use crate::store::{
    Actor, Alert, AlertStore, AlertSubject, Attempt, Audit, Changed, Dialect, DueDelivery,
    NewDelivery, Result, StoreError, StoredWebhook,
};

/// An alert a change is about to commit.
pub struct NewAlert<'a> {
    pub kind: AlertKind,
    pub agent: &'a plura_proto::Agent,
    /// The history event that tells it.
    pub event: &'a Event,
    pub holder_running: Option<bool>,
    /// Sent only from then on, unless the cloud's verdict on the agent's instance changes it
    /// first.
    pub held_until: Option<Timestamp>,
}

impl<'a> NewAlert<'a> {
    /// The alert of a change with one event.
    pub fn of(kind: AlertKind, changed: &'a Changed) -> Self {
        Self {
            kind,
            agent: &changed.agent,
            event: &changed.events[0],
            holder_running: None,
            held_until: None,
        }
    }
}

/// Records `alerts` in the transaction on `conn`.
pub async fn record(
    conn: &mut AnyConnection,
    dialect: Dialect,
    alerts: &[NewAlert<'_>],
) -> Result<()> {
    for chunk in alerts.chunks(rows_per_statement(7)) {
        let sql = format!(
            "INSERT INTO alerts (at, kind, agent, detail, holder_running, agent_id, held_until) \
             VALUES {}",
            placeholders(dialect, chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for alert in chunk {
            query = query
                .bind(alert.event.at.as_millis())
                .bind(alert.kind.as_str())
                .bind(subject_json(alert.agent)?)
                .bind(alert.event.detail.clone())
                .bind(alert.holder_running.map(i64::from))
                .bind(Some(alert.agent.id))
                .bind(alert.held_until.map(Timestamp::as_millis));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops the held stop alerts of `agents`, which came back before their verdict did: those
/// alerts never went out, so the return is no news either. Answers the agents whose alert was
/// dropped.
pub async fn drop_held(conn: &mut AnyConnection, agents: &[i64]) -> Result<Vec<i64>> {
    let mut dropped = Vec::new();
    for chunk in agents.chunks(rows_per_statement(1)) {
        let sql = format!(
            "UPDATE alerts SET dispatched = 1, held_until = NULL WHERE dispatched = 0 \
             AND held_until IS NOT NULL AND agent_id IN ({}) RETURNING agent_id",
            rows::id_list(chunk)
        );
        for row in sqlx::query(&sql).fetch_all(&mut *conn).await? {
            dropped.push(row.try_get("agent_id")?);
        }
    }
    Ok(dropped)
}

/// What an alert is about, as its row keeps it.
pub fn subject_json(subject: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(subject)
        .map_err(|e| StoreError::Corrupt(format!("an alert's subject as JSON: {e}")))
}

fn alert(row: &AnyRow) -> Result<Alert> {
    let kind: AlertKind = rows::parsed(row, "kind")?;
    let subject: String = row.try_get("agent")?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("an alert's subject: {e}"));
    let subject = if kind == AlertKind::InstancesWithoutAgent {
        AlertSubject::Instance(serde_json::from_str(&subject).map_err(corrupt)?)
    } else {
        AlertSubject::Agent(serde_json::from_str(&subject).map_err(corrupt)?)
    };
    Ok(Alert {
        id: row.try_get("id")?,
        kind,
        at: rows::time(row, "at")?,
        subject,
        detail: row.try_get("detail")?,
        holder_running: row
            .try_get::<Option<i64>, _>("holder_running")?
            .map(|h| h != 0),
    })
}

fn webhook(row: &AnyRow) -> Result<StoredWebhook> {
    Ok(StoredWebhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        format: rows::parsed(row, "format")?,
        secret: row.try_get("secret")?,
        origin: row.try_get("origin")?,
        created_at: rows::time(row, "created_at")?,
    })
}

const WEBHOOK_COLUMNS: &str = "id, url, format, secret, origin, created_at";

#[async_trait]
impl AlertStore for SqlStore {
    async fn webhooks(&self) -> Result<Vec<StoredWebhook>> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook).collect()
    }

    async fn record_alert(
        &self,
        kind: AlertKind,
        agent: &plura_proto::Agent,
        detail: &str,
        at: Timestamp,
    ) -> Result<()> {
        let event = rows::new_event(at, plura_proto::EventKind::Registered, detail);
        let alert = NewAlert {
            kind,
            agent,
            event: &event,
            holder_running: None,
            held_until: None,
        };
        let mut conn = self.writer.acquire().await?;
        record(&mut conn, self.backend.dialect(), &[alert]).await
    }

    async fn add_webhook(
        &self,
        url: &str,
        format: WebhookFormat,
        secret: &str,
        by: Actor<'_>,
        audit_detail: &str,
    ) -> Result<StoredWebhook> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (url, format, secret, origin, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (url, format) DO NOTHING \
             RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(url.to_string())
        .bind(format.as_str())
        .bind(secret.to_string())
        .bind(by.name.to_string())
        .bind(by.at.as_millis())
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Err(StoreError::WebhookExists { format });
        };
        let added = webhook(&row)?;
        let audit = Audit {
            by,
            action: AuditAction::WebhookAdded,
            detail: audit_detail.to_string(),
        };
        rows::record(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn delete_webhook(&self, id: i64, by: Actor<'_>) -> Result<bool> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        // Its URL (Slack's path is a credential) and signing secret go for good.
        let delete = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id);
        let deleted = self.erase(&mut tx, delete).await? > 0;
        if deleted {
            let audit = Audit {
                by,
                action: AuditAction::WebhookDeleted,
                detail: format!("webhook {id}"),
            };
            rows::record(tx.conn(), &audit).await?;
        }
        tx.commit().await?;
        if deleted {
            self.checkpoint_erased().await?;
        }
        Ok(deleted)
    }

    async fn set_webhooks_of(
        &self,
        origin: &str,
        hooks: &[(String, WebhookFormat)],
        secret: &str,
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT id, url, format FROM webhooks WHERE origin = $1")
            .bind(origin.to_string())
            .fetch_all(tx.conn())
            .await?;
        for row in &existing {
            let url: String = row.try_get("url")?;
            let format: WebhookFormat = rows::parsed(row, "format")?;
            if !hooks.iter().any(|(u, f)| *u == url && *f == format) {
                sqlx::query("DELETE FROM webhooks WHERE id = $1")
                    .bind(row.try_get::<i64, _>("id")?)
                    .execute(tx.conn())
                    .await?;
            }
        }
        for (url, format) in hooks {
            // Taken over from an admin's entry of the same URL too: the command line decides.
            sqlx::query(
                "INSERT INTO webhooks (url, format, secret, origin, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (url, format) \
                 DO UPDATE SET secret = excluded.secret, origin = excluded.origin",
            )
            .bind(url.clone())
            .bind(format.as_str())
            .bind(secret.to_string())
            .bind(origin.to_string())
            .bind(at.as_millis())
            .execute(tx.conn())
            .await?;
        }
        tx.commit(&[]).await
    }

    async fn waiting_alerts(&self, now: Timestamp, limit: u32) -> Result<Vec<Alert>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, agent, detail, holder_running FROM alerts \
             WHERE dispatched = 0 AND (held_until IS NULL OR held_until <= $1) \
             ORDER BY id LIMIT $2",
        )
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert).collect()
    }

    async fn queue_deliveries(
        &self,
        alerts: &[i64],
        deliveries: &[NewDelivery],
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for chunk in deliveries.chunks(rows_per_statement(7)) {
            let sql = format!(
                "INSERT INTO deliveries \
                 (webhook_id, event, count, text, body, state, created_at, next_attempt_at) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, 'pending', \
                 v.column6, v.column7 FROM (VALUES {}) AS v \
                 WHERE v.column1 IN (SELECT id FROM webhooks)",
                placeholders(tx.dialect(), chunk.len(), 7)
            );
            let mut query = sqlx::query(&sql);
            for delivery in chunk {
                query = query
                    .bind(delivery.webhook_id)
                    .bind(delivery.event.as_str())
                    .bind(i64::try_from(delivery.count).unwrap_or(i64::MAX))
                    .bind(delivery.text.clone())
                    .bind(delivery.body.clone())
                    .bind(at.as_millis())
                    .bind(at.as_millis());
            }
            query.execute(tx.conn()).await?;
        }
        for chunk in alerts.chunks(rows_per_statement(1)) {
            let sql = format!(
                "UPDATE alerts SET dispatched = 1 WHERE id IN ({})",
                rows::id_list(chunk)
            );
            sqlx::query(&sql).execute(tx.conn()).await?;
        }
        tx.commit(&[]).await
    }

    async fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(
            "SELECT d.id, d.event, d.body, d.attempts, d.created_at, w.url, w.secret, w.origin \
             FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
             ORDER BY d.next_attempt_at, d.id LIMIT $2",
        )
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    id: row.try_get("id")?,
                    event: rows::parsed(row, "event")?,
                    body: row.try_get("body")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    created_at: rows::time(row, "created_at")?,
                    url: row.try_get("url")?,
                    secret: row.try_get("secret")?,
                    from_command_line: row.try_get::<String, _>("origin")? == COMMAND_LINE,
                })
            })
            .collect()
    }

    async fn attempted(&self, id: i64, at: Timestamp, attempt: &Attempt) -> Result<()> {
        let (state, next, error) = match attempt {
            Attempt::Delivered => (DeliveryState::Delivered, None, None),
            Attempt::Retry { next, error } => {
                (DeliveryState::Pending, Some(next.as_millis()), Some(error))
            }
            Attempt::Failed { error } => (DeliveryState::Failed, None, Some(error)),
        };
        let query = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, last_attempt_at = $2, \
             next_attempt_at = $3, last_error = COALESCE($4, last_error) WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(at.as_millis())
        .bind(next)
        .bind(error.cloned())
        .bind(id);
        self.write_counted(query).await?;
        Ok(())
    }

    async fn deliveries(&self, limit: u32) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT d.id, d.webhook_id, w.url, d.event, d.count, d.text, d.state, d.attempts, \
             d.created_at, d.last_attempt_at, d.next_attempt_at, d.last_error \
             FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             ORDER BY d.id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    webhook_id: row.try_get("webhook_id")?,
                    webhook_url: row.try_get("url")?,
                    event: rows::parsed(row, "event")?,
                    count: rows::count(row, "count")?,
                    text: row.try_get("text")?,
                    state: rows::parsed(row, "state")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    created_at: rows::time(row, "created_at")?,
                    last_attempt_at: rows::optional_time(row, "last_attempt_at")?,
                    next_attempt_at: rows::optional_time(row, "next_attempt_at")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }

    async fn delete_alerts_before(&self, cutoff: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let alerts = sqlx::query("DELETE FROM alerts WHERE dispatched = 1 AND at < $1")
            .bind(cutoff.as_millis())
            .execute(tx.conn())
            .await?
            .rows_affected();
        let deliveries =
            sqlx::query("DELETE FROM deliveries WHERE state <> 'pending' AND created_at < $1")
                .bind(cutoff.as_millis())
                .execute(tx.conn())
                .await?
                .rows_affected();
        tx.commit(&[]).await?;
        Ok(alerts + deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::testing::store_on_a_file;

    /// A change and its audit record are one transaction: when the record cannot be written,
    /// the change is not made either (and a one-time secret is not lost to a half-made change).
    #[tokio::test]
    async fn a_webhook_is_not_added_without_its_audit_record() {
        let (_dir, store) = store_on_a_file().await;
        let by = Actor {
            name: "admin",
            at: Timestamp::now(),
        };
        sqlx::query("ALTER TABLE audit_log RENAME TO audit_log_gone")
            .execute(&store.pool)
            .await
            .unwrap();
        let url = "http://10.0.0.9/hook";
        let added = store
            .add_webhook(url, WebhookFormat::Json, "s3cret-s3cret-s3cret", by, url)
            .await;
        assert!(added.is_err(), "{added:?}");
        assert!(store.webhooks().await.unwrap().is_empty());

        sqlx::query("ALTER TABLE audit_log_gone RENAME TO audit_log")
            .execute(&store.pool)
            .await
            .unwrap();
        let added = store
            .add_webhook(url, WebhookFormat::Json, "s3cret-s3cret-s3cret", by, url)
            .await
            .unwrap();
        assert_eq!(
            added.url, url,
            "the same webhook, added once its record can be"
        );
    }
}
