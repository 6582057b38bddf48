//! The JSON bodies of the `/api/v1` API, and the rules every field must meet.
//!
//! Validation lives beside the types so that an agent can refuse to send what the server would
//! refuse to take, and both say it in the same words.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::rules::{
    FieldError, host_address, hostname_form, validate_identity, validate_optional_text,
    validate_text,
};
use crate::text_enum::text_enum;
use crate::{AgentCloud, Timestamp};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// An agent's first words to the server, and its words after every restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginRequest {
    /// The IPv4 (or IPv6) address of the agent's configured interface: half of its identity. An
    /// IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is taken as the IPv4 address it maps.
    #[serde(deserialize_with = "host_address")]
    pub ip: String,
    /// The host's name: the other half of its identity, compared in lower case and without a
    /// trailing dot (`WAF-1.` is `waf-1`).
    #[serde(deserialize_with = "hostname_form")]
    pub hostname: String,
    /// The instance's unique id, sent when `login_with_machine_id=1`; stored, not identity.
    #[serde(default)]
    pub machine_id: Option<String>,
    pub version: String,
    pub os: String,
    /// What the agent protects, e.g. `waf`, `siem`, `edr`.
    pub kind: String,
    /// Where it runs, when on EC2.
    #[serde(default)]
    pub cloud: CloudLabels,
}

impl LoginRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_identity(&self.ip, &self.hostname)?;
        validate_text("version", &self.version)?;
        validate_text("os", &self.os)?;
        validate_text("kind", &self.kind)?;
        validate_optional_text("machine_id", self.machine_id.as_deref())?;
        self.cloud.validate()
    }
}

/// Where an agent runs in the cloud, as the instance metadata service (IMDSv2) tells it; empty
/// off EC2. Labels for the operator, not identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CloudLabels {
    /// The EC2 instance id.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The availability zone, e.g. `ap-northeast-2a`.
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub instance_type: Option<String>,
    /// The Auto Scaling group: the instance's tag `aws:autoscaling:groupName`, readable when
    /// the instance's metadata tags are on.
    #[serde(default)]
    pub asg: Option<String>,
}

impl CloudLabels {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_optional_text("cloud.instance_id", self.instance_id.as_deref())?;
        validate_optional_text("cloud.zone", self.zone.as_deref())?;
        validate_optional_text("cloud.instance_type", self.instance_type.as_deref())?;
        validate_optional_text("cloud.asg", self.asg.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginResponse {
    pub agent_id: i64,
    /// This agent's own secret: it alone authenticates the agent's heartbeats and logout. A new
    /// login of the identity issues a new one and revokes this one. Shown only here.
    pub agent_key: String,
    /// True when this login registered a new agent, false when it found the existing entry.
    pub created: bool,
    /// How often the agent must send a heartbeat; three missed make it `stopped`.
    pub heartbeat_interval_s: u64,
}

/// An operator registering a system by hand before its agent ever logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    #[serde(deserialize_with = "host_address")]
    pub ip: String,
    #[serde(deserialize_with = "hostname_form")]
    pub hostname: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub group: Option<String>,
}

impl RegisterAgent {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_identity(&self.ip, &self.hostname)?;
        validate_text("kind", &self.kind)?;
        validate_text("os", &self.os)?;
        validate_optional_text("group", self.group.as_deref())
    }
}

/// The management settings an operator may change. Absent fields stay as they are; `group: null`
/// takes the agent out of its group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchAgent {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub group: Option<Option<String>>,
}

impl PatchAgent {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_optional_text("group", self.group.clone().flatten().as_deref())
    }
}

/// Tells a field that was sent as `null` (`Some(None)`) from one that was left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// A heartbeat arrived within three heartbeat intervals.
    Running,
    /// Silent for longer than that, or logged out. Never deleted for it.
    Stopped,
    /// Registered by an operator and never seen.
    Unknown,
}

/// One managed agent as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Agent {
    pub id: i64,
    pub ip: String,
    pub hostname: String,
    pub status: AgentStatus,
    /// The ON/OFF management switch; independent of `status`.
    pub enabled: bool,
    pub group: Option<String>,
    pub kind: String,
    pub os: String,
    pub version: String,
    pub machine_id: Option<String>,
    /// The address the last login came from, as the server saw it.
    pub source_ip: Option<String>,
    pub registered_at: Timestamp,
    pub last_login_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    /// When a login last came from another source address, machine id or kind than the one
    /// before it.
    #[serde(default)]
    pub last_takeover_at: Option<Timestamp>,
    /// Where it runs, as its last login said, and what the cloud said of it since it went
    /// silent.
    #[serde(default)]
    pub cloud: AgentCloud,
}

impl Agent {
    /// Whether its last login came from another address than the one it claims (NAT, a proxy,
    /// or a host speaking for another).
    pub fn source_differs(&self) -> bool {
        self.source_ip
            .as_deref()
            .is_some_and(|source| source != self.ip)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AgentList {
    /// How many agents match the filter, over all pages. A search (`q`) counts up to 1,000
    /// matches: past that, `total` is 1,000 and `total_exact` is false.
    pub total: u64,
    pub total_exact: bool,
    pub page: u32,
    pub per_page: u32,
    pub items: Vec<Agent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An unknown (ip, hostname) logged in, or an operator registered it.
    Registered,
    Login,
    /// A known identity logged in from another source address, machine id or kind than its
    /// last login.
    Takeover,
    /// A heartbeat arrived from an agent that had been marked stopped.
    Resumed,
    /// Silent for three heartbeat intervals.
    Stopped,
    /// Said goodbye (graceful shutdown).
    Logout,
    Enabled,
    Disabled,
    GroupChanged,
    /// Deleted by an operator (kept in the audit log only).
    Deleted,
    /// Deleted by the prune policy after a long stop (kept in the audit log only).
    Pruned,
}

/// One entry of an agent's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Event {
    pub at: Timestamp,
    pub event: EventKind,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventList {
    /// Newest first.
    pub items: Vec<Event>,
}

/// A change to the fleet, as the live stream (`/api/v1/events/stream`) tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Change {
    pub agent_id: i64,
    pub at: Timestamp,
    pub event: EventKind,
    pub detail: String,
    /// The agent after the change; absent when it was deleted.
    pub agent: Option<Agent>,
}

/// What the audit log records: people's changes to agents and to who may do what, and the
/// server's own deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An agent registered by hand.
    Registered,
    Enabled,
    Disabled,
    GroupChanged,
    Deleted,
    /// Deleted by the prune policy after a long stop.
    Pruned,
    /// An API token made (on the command line or through the API).
    TokenCreated,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    PasswordChanged,
    /// The agents' enrollment token made or replaced.
    EnrollmentTokenRotated,
    WebhookAdded,
    WebhookDeleted,
    /// A person signed in through the identity provider (OpenID Connect); the first time, their
    /// user was made.
    SsoSignedIn,
    /// A sign-in through the identity provider refused: no role for the person, their user
    /// disabled, or an answer from the provider that did not check out.
    SsoRefused,
}

/// A record of the audit log: who did what (to which agent, if to one), kept after the agent is
/// gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditRecord {
    pub at: Timestamp,
    /// The API token's or user's name, `command line`, or `system` for the server's own
    /// policies.
    pub actor: String,
    pub action: AuditAction,
    pub agent_id: Option<i64>,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditList {
    pub items: Vec<AuditRecord>,
}

/// The fleet at one point of its chart: the most agents running, stopped and never heard from
/// at any sample within the interval starting at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetPoint {
    pub at: Timestamp,
    pub running: u64,
    pub stopped: u64,
    pub unknown: u64,
}

/// The fleet over time, oldest first; intervals without a sample (the server was down) are
/// missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetHistory {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Each point's interval.
    pub step_s: u64,
    pub points: Vec<FleetPoint>,
}

/// The console's summary cards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Summary {
    pub registered: u64,
    pub enabled: u64,
    pub disabled: u64,
    pub running: u64,
    pub stopped: u64,
    pub unknown: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub by_os: BTreeMap<String, u64>,
    /// Agents per group; agents in no group are not counted here.
    pub by_group: BTreeMap<String, u64>,
    /// Agents stopped without a goodbye, per verdict of the cloud on their instance.
    #[serde(default)]
    pub by_verdict: BTreeMap<String, u64>,
}

/// Who may do what with an API token, each role including the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Monitor,
    /// Also switches agents ON/OFF and assigns groups.
    Operator,
    /// Also registers and deletes agents.
    Admin,
}

/// Who the caller's token says it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WhoAmI {
    pub name: String,
    pub role: Role,
}

/// A person signing in to the console with a name and password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub username: String,
    pub password: String,
}

/// What a sign-in gives: a role token to send as `Authorization: Bearer`, until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Session {
    pub token: String,
    pub name: String,
    pub role: Role,
    pub expires_at: Timestamp,
    /// For a sign-in through the identity provider: where the browser goes after signing out
    /// here, to end the provider's sign-in too (when the provider has such an endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_url: Option<String>,
}

/// Sign-in through the company's identity provider, offered when the server is set up for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SingleSignOn {
    /// Where the browser goes to start it.
    pub login_url: String,
    /// The provider (OpenID Connect issuer).
    pub issuer: String,
}

/// Every error the API answers, with a 4xx or 5xx status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `bad_request`, `not_found`, `forbidden`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

text_enum!(AgentStatus { Running => "running", Stopped => "stopped", Unknown => "unknown" });
text_enum!(Role { Monitor => "monitor", Operator => "operator", Admin => "admin" });
text_enum!(AuditAction {
    Registered => "registered",
    Enabled => "enabled",
    Disabled => "disabled",
    GroupChanged => "group_changed",
    Deleted => "deleted",
    Pruned => "pruned",
    TokenCreated => "token_created",
    TokenRevoked => "token_revoked",
    UserCreated => "user_created",
    UserDisabled => "user_disabled",
    UserEnabled => "user_enabled",
    UserDeleted => "user_deleted",
    PasswordChanged => "password_changed",
    EnrollmentTokenRotated => "enrollment_token_rotated",
    WebhookAdded => "webhook_added",
    WebhookDeleted => "webhook_deleted",
    SsoSignedIn => "sso_signed_in",
    SsoRefused => "sso_refused",
});
text_enum!(EventKind {
    Registered => "registered",
    Login => "login",
    Takeover => "takeover",
    Resumed => "resumed",
    Stopped => "stopped",
    Logout => "logout",
    Enabled => "enabled",
    Disabled => "disabled",
    GroupChanged => "group_changed",
    Deleted => "deleted",
    Pruned => "pruned",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> LoginRequest {
        LoginRequest {
            ip: "172.31.64.4".into(),
            hostname: "waf-1".into(),
            machine_id: None,
            version: "5.0.1".into(),
            os: "Ubuntu 24.04".into(),
            kind: "waf".into(),
            cloud: CloudLabels::default(),
        }
    }

    #[test]
    fn a_plain_login_is_valid() {
        assert_eq!(login().validate(), Ok(()));
    }

    #[test]
    fn ip_must_be_a_canonical_host_address() {
        for (ip, hint) in [
            ("abc", "is not an IPv4 or IPv6 address"),
            ("172.31.64", "is not an IPv4 or IPv6 address"),
            ("0.0.0.0", "cannot be a host's own address"),
            ("224.0.0.1", "cannot be a host's own address"),
            ("255.255.255.255", "cannot be a host's own address"),
            ("::", "cannot be a host's own address"),
            ("fe80:0:0::1", "canonical form fe80::1"),
        ] {
            let err = LoginRequest {
                ip: ip.into(),
                ..login()
            }
            .validate()
            .unwrap_err();
            assert_eq!(err.field, "ip");
            assert!(err.problem.contains(hint), "{ip}: {err}");
        }
        let v6 = LoginRequest {
            ip: "fe80::1".into(),
            ..login()
        };
        assert_eq!(v6.validate(), Ok(()));
    }

    #[test]
    fn hostnames_are_dns_names_in_their_normal_form() {
        let mut body = serde_json::to_value(login()).unwrap();
        body["hostname"] = "WAF-1.".into();
        let parsed: LoginRequest = serde_json::from_value(body).unwrap();
        assert_eq!(parsed.hostname, "waf-1", "lower case, no trailing dot");
        assert_eq!(parsed.validate(), Ok(()));
        for bad in [
            String::new(),
            "a".repeat(254),
            "waf\n1".into(),
            " ".into(),
            "waf 1".into(),
            "x\u{202e}gnp.exe".into(),
            "zw\u{200b}sp".into(),
            "nb\u{a0}sp".into(),
            "<img/src=x/onerror=alert(1)>".into(),
        ] {
            let err = LoginRequest {
                hostname: bad,
                ..login()
            }
            .validate()
            .unwrap_err();
            assert_eq!(err.field, "hostname");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_taken_as_ipv4() {
        let mut body = serde_json::to_value(login()).unwrap();
        body["ip"] = "::ffff:10.0.0.1".into();
        let parsed: LoginRequest = serde_json::from_value(body).unwrap();
        assert_eq!(parsed.ip, "10.0.0.1");
        assert_eq!(parsed.validate(), Ok(()));
    }

    #[test]
    fn texts_may_hold_spaces_but_not_only_blanks_or_invisible_characters() {
        assert_eq!(
            LoginRequest {
                os: "Ubuntu 24.04".into(),
                ..login()
            }
            .validate(),
            Ok(())
        );
        for bad in ["   ", "Ubuntu\u{200d}", "a\u{2028}b", "\u{feff}x"] {
            let err = LoginRequest {
                os: bad.into(),
                ..login()
            }
            .validate()
            .unwrap_err();
            assert_eq!(err.field, "os", "{bad:?}");
        }
    }

    #[test]
    fn short_texts_have_a_limit() {
        let err = LoginRequest {
            version: "9".repeat(129),
            ..login()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "version: is 129 characters long; at most 128 are allowed"
        );
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let absent: PatchAgent = serde_json::from_str(r#"{"enabled":false}"#).unwrap();
        assert_eq!(absent.group, None);
        let cleared: PatchAgent = serde_json::from_str(r#"{"group":null}"#).unwrap();
        assert_eq!(cleared.group, Some(None));
        let set: PatchAgent = serde_json::from_str(r#"{"group":"web"}"#).unwrap();
        assert_eq!(set.group, Some(Some("web".into())));
        assert!(serde_json::from_str::<PatchAgent>(r#"{"grop":"web"}"#).is_err());
    }

    #[test]
    fn text_enums_round_trip_and_explain_refusals() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(*kind));
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err(),
            "\"root\" is not one of: monitor, operator, admin"
        );
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Monitor);
    }
}
