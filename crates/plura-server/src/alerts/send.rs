//! One try of a delivery: a POST signed with HMAC-SHA256 over the body (as GitHub and Stripe
//! sign theirs), bounded in time, and what to do after a failure.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use plura_proto::Timestamp;

use super::destinations::{Destinations, filtering};
use crate::secret::hex;
use crate::store::{Attempt, DueDelivery};

/// The signature header: `sha256=` and the hex HMAC-SHA256 of the body under the secret.
pub const SIGNATURE_HEADER: &str = "x-plura-signature-256";
/// The delivery's id, the same on every try, so a receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "x-plura-delivery";
pub const EVENT_HEADER: &str = "x-plura-event";

/// A receiver gets this long to answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(600);
/// A delivery not taken within this is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The clients deliveries go out with: no redirects (a webhook is where it was set), bounded
/// connect and total time. Webhooks added through the API go only where `destinations` allow;
/// the command line's are the operator's own.
pub struct Clients {
    destinations: Destinations,
    checked: reqwest::Client,
    own: reqwest::Client,
}

impl Clients {
    pub fn new(destinations: Destinations) -> Self {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .timeout(SEND_TIMEOUT)
                .user_agent(concat!("plura-server/", env!("CARGO_PKG_VERSION")))
        };
        Self {
            destinations,
            checked: filtering(builder(), destinations)
                .build()
                .expect("a client with rustls"),
            own: builder().build().expect("a client with rustls"),
        }
    }

    pub fn destinations(&self) -> Destinations {
        self.destinations
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Sends `delivery` once; answers what became of it.
pub async fn send(clients: &Clients, delivery: &DueDelivery, now: Timestamp) -> Attempt {
    let client = if delivery.from_command_line {
        &clients.own
    } else if let Err(refused) = clients.destinations.check_literal(&delivery.url) {
        return after_failure(delivery, now, format!("not sent: {refused}"));
    } else {
        &clients.checked
    };
    let sent = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(&delivery.secret, &delivery.body),
        )
        .header(DELIVERY_HEADER, delivery.id.to_string())
        .header(EVENT_HEADER, delivery.event.as_str())
        .body(delivery.body.clone())
        .send()
        .await;
    let error = match sent {
        Ok(response) if response.status().is_success() => return Attempt::Delivered,
        Ok(response) => format!("answered {}", response.status()),
        // Without the URL: its path may be a secret (Slack's is).
        Err(e) => format!("not sent: {}", e.without_url()),
    };
    after_failure(delivery, now, error)
}

/// Tried again after a wait that doubles from a second up to ten minutes, for a day.
fn after_failure(delivery: &DueDelivery, now: Timestamp, error: String) -> Attempt {
    if now.as_millis() - delivery.created_at.as_millis() >= GIVE_UP_AFTER.as_millis() as i64 {
        return Attempt::Failed { error };
    }
    let wait = FIRST_RETRY
        .saturating_mul(1 << delivery.attempts.min(20))
        .min(LONGEST_WAIT);
    Attempt::Retry {
        next: now.plus(wait),
        error,
    }
}

#[cfg(test)]
mod tests {
    use plura_proto::AlertKind;

    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_and_give_up_after_a_day() {
        let created = Timestamp::from_millis(1_000_000);
        let mut delivery = DueDelivery {
            id: 1,
            event: AlertKind::AgentStopped,
            body: String::new(),
            attempts: 0,
            created_at: created,
            url: String::new(),
            secret: String::new(),
            from_command_line: false,
        };
        let waits: Vec<i64> = [0, 1, 2, 12]
            .into_iter()
            .map(|attempts| {
                delivery.attempts = attempts;
                match after_failure(&delivery, created, "x".into()) {
                    Attempt::Retry { next, .. } => next.as_millis() - created.as_millis(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 600_000]);
        let a_day_later = created.plus(GIVE_UP_AFTER);
        assert!(matches!(
            after_failure(&delivery, a_day_later, "x".into()),
            Attempt::Failed { .. }
        ));
    }
}
