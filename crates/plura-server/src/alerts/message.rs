//! The messages alerts become: waiting alerts of one kind are one message (a scale-in or an
//! outage that stops a thousand agents is one alert naming how many), written as JSON or in
//! Slack's incoming-webhook format.

use plura_proto::{AlertKind, AlertMessage, AlertedAgent, WebhookFormat};

use crate::store::{Alert, AlertSubject};

/// Agents named in a JSON message; the rest are counted.
const NAMED_IN_JSON: usize = 100;
/// Agents named in a message's text.
const NAMED_IN_TEXT: usize = 10;

/// One message per kind of alert, in the order each kind first came.
pub fn messages(alerts: &[Alert]) -> Vec<AlertMessage> {
    let mut kinds: Vec<AlertKind> = Vec::new();
    for alert in alerts {
        if !kinds.contains(&alert.kind) {
            kinds.push(alert.kind);
        }
    }
    kinds
        .into_iter()
        .map(|kind| {
            let of_kind: Vec<&Alert> = alerts.iter().filter(|a| a.kind == kind).collect();
            message(kind, &of_kind)
        })
        .collect()
}

fn message(kind: AlertKind, alerts: &[&Alert]) -> AlertMessage {
    let count = alerts.len() as u64;
    let named = || alerts.iter().take(NAMED_IN_JSON);
    AlertMessage {
        event: kind,
        count,
        text: text(kind, alerts),
        agents: named()
            .filter_map(|a| match &a.subject {
                AlertSubject::Agent(agent) => Some(AlertedAgent {
                    at: a.at,
                    detail: a.detail.clone(),
                    holder_was_running: a.holder_running,
                    agent: agent.as_ref().clone(),
                }),
                AlertSubject::Instance(_) => None,
            })
            .collect(),
        instances: named()
            .filter_map(|a| match &a.subject {
                AlertSubject::Instance(instance) => Some(instance.clone()),
                AlertSubject::Agent(_) => None,
            })
            .collect(),
        more: count.saturating_sub(NAMED_IN_JSON as u64),
    }
}

/// An agent by its hostname and address; an instance by its id and group.
fn name(alert: &Alert) -> String {
    match &alert.subject {
        AlertSubject::Agent(agent) => format!("{} ({})", agent.hostname, agent.ip),
        AlertSubject::Instance(i) => format!(
            "{} ({}, {})",
            i.instance.instance_id, i.asg, i.instance.zone
        ),
    }
}

/// The message for a person: what happened, to whom, and for one agent why.
fn text(kind: AlertKind, alerts: &[&Alert]) -> String {
    if let [alert] = alerts {
        let name = name(alert);
        return match kind {
            AlertKind::AgentStopped => {
                format!(
                    "Agent {name} stopped without saying goodbye: {}",
                    alert.detail
                )
            }
            AlertKind::AgentTakenOver if alert.holder_running == Some(true) => format!(
                "Agent {name} was taken over while its holder was still running (two hosts \
                 claim it; suspicious): {}",
                alert.detail
            ),
            AlertKind::AgentTakenOver => format!("Agent {name} was taken over: {}", alert.detail),
            AlertKind::AgentBack => {
                format!("Agent {name} is back after stopping without a goodbye")
            }
            AlertKind::RegistrationRefused => {
                format!("A new agent, {name}, was refused: {}", alert.detail)
            }
            AlertKind::AgentSilentOnRunningInstance => format!(
                "Agent {name} is silent on a running instance (killed, crashed or cut off?): {}",
                alert.detail
            ),
            AlertKind::AgentInstanceGone => {
                format!("Agent {name} stopped with its instance: {}", alert.detail)
            }
            AlertKind::InstancesWithoutAgent => {
                format!("Instance {name} has no running agent: {}", alert.detail)
            }
        };
    }
    let what = match kind {
        AlertKind::AgentStopped => "agents stopped without saying goodbye",
        AlertKind::AgentTakenOver => {
            let running = alerts
                .iter()
                .filter(|a| a.holder_running == Some(true))
                .count();
            if running > 0 {
                return format!(
                    "{} agents were taken over, {running} while their holder was still running \
                     (suspicious): {}",
                    alerts.len(),
                    names(alerts)
                );
            }
            "agents were taken over"
        }
        AlertKind::AgentBack => "agents are back after stopping without a goodbye",
        AlertKind::RegistrationRefused => "new agents were refused at the fleet's limit",
        AlertKind::AgentSilentOnRunningInstance => {
            "agents are silent on running instances (killed, crashed or cut off?)"
        }
        AlertKind::AgentInstanceGone => {
            "agents stopped with their instances (terminated or stopped: scale-in)"
        }
        AlertKind::InstancesWithoutAgent => "instances of watched groups have no running agent",
    };
    format!("{} {what}: {}", alerts.len(), names(alerts))
}

fn names(alerts: &[&Alert]) -> String {
    let mut names: Vec<String> = alerts.iter().take(NAMED_IN_TEXT).map(|a| name(a)).collect();
    if alerts.len() > NAMED_IN_TEXT {
        names.push(format!("and {} more", alerts.len() - NAMED_IN_TEXT));
    }
    names.join(", ")
}

/// Text for Slack's markup, where `<…>` is a link or a mention (`<!channel>`) and `&` starts an
/// entity: what agents and operators wrote is shown as written, never as markup.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The body a webhook of `format` receives.
pub fn body(message: &AlertMessage, format: WebhookFormat) -> String {
    let body = match format {
        WebhookFormat::Json => serde_json::to_string(message),
        WebhookFormat::Slack => {
            let icon = match message.event {
                AlertKind::AgentStopped => ":red_circle:",
                AlertKind::AgentTakenOver => ":warning:",
                AlertKind::AgentBack => ":large_green_circle:",
                AlertKind::RegistrationRefused => ":no_entry:",
                AlertKind::AgentSilentOnRunningInstance => ":rotating_light:",
                AlertKind::AgentInstanceGone => ":information_source:",
                AlertKind::InstancesWithoutAgent => ":mag:",
            };
            serde_json::to_string(&serde_json::json!({
                "text": format!("{icon} PLURA Fleet: {}", slack_escaped(&message.text)),
            }))
        }
    };
    body.expect("an alert message is plain data")
}

#[cfg(test)]
mod tests {
    use plura_proto::{Agent, AgentStatus, Timestamp};

    use super::*;

    fn alert(n: i64, kind: AlertKind) -> Alert {
        Alert {
            id: n,
            kind,
            at: Timestamp::from_millis(1_000 * n),
            subject: AlertSubject::Agent(Box::new(Agent {
                id: n,
                ip: format!("10.0.0.{n}"),
                hostname: format!("web-{n}"),
                status: AgentStatus::Stopped,
                enabled: true,
                group: None,
                kind: "waf".into(),
                os: String::new(),
                version: String::new(),
                machine_id: None,
                source_ip: None,
                registered_at: Timestamp::from_millis(0),
                last_login_at: None,
                last_seen_at: None,
                last_takeover_at: None,
                cloud: Default::default(),
            })),
            detail: "no heartbeat since then".into(),
            holder_running: (kind == AlertKind::AgentTakenOver).then_some(n % 2 == 0),
        }
    }

    #[test]
    fn many_stops_are_one_message_naming_how_many() {
        let mut alerts: Vec<Alert> = (1..=150)
            .map(|n| alert(n, AlertKind::AgentStopped))
            .collect();
        alerts.insert(3, alert(500, AlertKind::AgentTakenOver));
        let messages = messages(&alerts);
        assert_eq!(messages.len(), 2);
        let stops = &messages[0];
        assert_eq!(stops.event, AlertKind::AgentStopped);
        assert_eq!(
            (stops.count, stops.agents.len(), stops.more),
            (150, 100, 50)
        );
        assert!(
            stops
                .text
                .starts_with("150 agents stopped without saying goodbye: web-1 (10.0.0.1)"),
            "{}",
            stops.text
        );
        assert!(stops.text.ends_with("and 140 more"), "{}", stops.text);
        let takeover = &messages[1];
        assert_eq!(takeover.count, 1);
        assert!(takeover.text.contains("while its holder was still running"));
        assert_eq!(takeover.agents[0].holder_was_running, Some(true));
    }

    #[test]
    fn slack_text_cannot_ping_or_link() {
        let mut hostile = alert(1, AlertKind::AgentStopped);
        if let AlertSubject::Agent(agent) = &mut hostile.subject {
            agent.hostname = "<!channel> <https://evil.example/sso|re-login> &amp;".into();
        }
        let message = &messages(&[hostile])[0];
        let slack: serde_json::Value =
            serde_json::from_str(&body(message, WebhookFormat::Slack)).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("&lt;!channel&gt; &lt;https://evil.example/sso|re-login&gt; &amp;amp;"),
            "{text}"
        );
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
    }

    #[test]
    fn bodies_are_json_or_slack_text() {
        let message = &messages(&[alert(1, AlertKind::AgentStopped)])[0];
        let json: AlertMessage = serde_json::from_str(&body(message, WebhookFormat::Json)).unwrap();
        assert_eq!(&json, message);
        let slack: serde_json::Value =
            serde_json::from_str(&body(message, WebhookFormat::Slack)).unwrap();
        assert_eq!(
            slack["text"],
            ":red_circle: PLURA Fleet: Agent web-1 (10.0.0.1) stopped without saying goodbye: \
             no heartbeat since then"
        );
    }

    #[test]
    fn instances_without_an_agent_are_named_as_instances() {
        let instance = |n: i64| Alert {
            id: n,
            kind: AlertKind::InstancesWithoutAgent,
            at: Timestamp::from_millis(n),
            subject: AlertSubject::Instance(plura_proto::AlertedInstance {
                at: Timestamp::from_millis(n),
                asg: "web".into(),
                instance: plura_proto::UncoveredInstance {
                    instance_id: format!("i-{n}"),
                    zone: "ap-northeast-2a".into(),
                    launched_at: Timestamp::from_millis(0),
                    agent_id: None,
                    in_grace: false,
                },
            }),
            detail: "no agent has logged in from it".into(),
            holder_running: None,
        };
        let message = &messages(&[instance(1), instance(2)])[0];
        assert_eq!((message.count, message.agents.len()), (2, 0));
        assert_eq!(message.instances[1].instance.instance_id, "i-2");
        assert_eq!(
            message.text,
            "2 instances of watched groups have no running agent: \
             i-1 (web, ap-northeast-2a), i-2 (web, ap-northeast-2a)"
        );
        let one = &messages(&[instance(3)])[0];
        assert!(
            one.text
                .starts_with("Instance i-3 (web, ap-northeast-2a) has no running agent")
        );
    }
}
