//! `plura-server serve`: its settings, checked before anything else, and the start of a server
//! from them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use plura_proto::redact_webhook_url;

use crate::fleet::{
    CloudPolicy, DEFAULT_COVERAGE_GRACE, DEFAULT_EVENT_RETENTION, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_VERDICT_WAIT, LivenessPolicy,
};
use crate::oidc::{self, OidcSettings, RelyingParty, RoleRules};
use crate::store::Store;
use crate::tls::{Certified, TlsFiles};
use crate::{alerts, auth, secret, server, store};

/// Where the server listens unless told: loopback, behind a proxy or for a first look.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The settings of `serve`; their defaults are the constants the code uses, declared once.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PLURA_LISTEN", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// How often agents send a heartbeat; three missed make an agent stopped (at least 1s).
    #[arg(
        long,
        default_value_t = Span(DEFAULT_HEARTBEAT_INTERVAL),
        value_parser = at_least_a_second
    )]
    heartbeat_interval: Span,
    /// Delete agents stopped for longer than this (e.g. 14d). Off unless given.
    #[arg(long, value_parser = humantime::parse_duration)]
    prune_stopped_after: Option<Duration>,
    /// Delete agents' history events older than this; 0 keeps them forever.
    #[arg(long, default_value_t = Span(DEFAULT_EVENT_RETENTION))]
    keep_events_for: Span,
    /// While `plura-eni watch` reports, how long the stop alert of an agent on EC2 waits for the
    /// cloud's verdict on its instance before it goes out as it is.
    #[arg(long, default_value_t = Span(DEFAULT_VERDICT_WAIT))]
    cloud_verdict_wait: Span,
    /// Alert agents that stopped with their instances (terminated or stopped: scale-in), as
    /// one informational message; without it they raise no alert.
    #[arg(long)]
    alert_on_scale_in: bool,
    /// How long a new instance of a watched group has to boot and log its agent in before it
    /// counts as uncovered.
    #[arg(long, default_value_t = Span(DEFAULT_COVERAGE_GRACE))]
    coverage_grace: Span,
    /// Connections served at once [default: the open-file limit, raised to its hard limit, less
    /// 256].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections one source address (an IPv6 /64) may hold at once; 0: no limit.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_SOURCE)]
    max_connections_per_source: usize,
    /// Serve HTTPS with this certificate chain (PEM; the server's certificate first). Read again
    /// when the file changes or on SIGHUP.
    #[arg(
        long,
        env = "PLURA_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "PLURA_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    tls_key: Option<PathBuf>,
    /// A proxy or load balancer (address or CIDR range) whose X-Forwarded-For is believed: the
    /// client is its rightmost address that is not itself a trusted proxy. Repeatable; none by
    /// default.
    #[arg(
        long = "trusted-proxy",
        env = "PLURA_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR",
        value_parser = parse_range
    )]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Trusted proxies open each connection with a PROXY protocol header (v1 or v2), as TCP
    /// balancers (an AWS NLB, HAProxy) do, instead of sending X-Forwarded-For.
    #[arg(long, requires = "trusted_proxies")]
    proxy_protocol: bool,
    /// Logins each source address may make per second (bursts of ten seconds' worth); 0: no
    /// limit.
    #[arg(long, default_value_t = server::DEFAULT_LOGINS_PER_SOURCE)]
    logins_per_source: u32,
    /// How many agents may be registered: a new identity past it is refused (403 agent_limit)
    /// and alerted, while known agents still log in. No bound unless given.
    #[arg(long, env = "PLURA_MAX_AGENTS", value_name = "N")]
    max_agents: Option<u64>,
    /// Let admins add webhooks that point at loopback (127.0.0.0/8, ::1, localhost): a receiver
    /// on the server's own host. Link-local addresses and cloud metadata stay refused.
    #[arg(long)]
    allow_loopback_webhooks: bool,
    /// Post alerts (agents stopped without a goodbye, identities taken over, lost agents back)
    /// as JSON to this URL, signed with --alert-secret. Repeatable; admins add more through the
    /// API and the console.
    #[arg(long = "alert-webhook", value_name = "URL")]
    alert_webhooks: Vec<String>,
    /// Post alerts in Slack's incoming-webhook format to this URL. Repeatable. The URL is a
    /// secret: better from the environment (comma-separated) or --alert-slack-file than on a
    /// command line that `ps` shows.
    #[arg(
        long = "alert-slack",
        value_name = "URL",
        env = "PLURA_ALERT_SLACK_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    alert_slack: Vec<String>,
    /// Read Slack webhook URLs from this file, one a line (`#` starts a comment).
    #[arg(long, env = "PLURA_ALERT_SLACK_URL_FILE", value_name = "FILE")]
    alert_slack_file: Option<PathBuf>,
    /// The HMAC-SHA256 key that signs deliveries to the webhooks above (header
    /// X-Plura-Signature-256); at least 16 characters. Better from the environment than on a
    /// command line that `ps` shows.
    #[arg(long, env = "PLURA_ALERT_SECRET", hide_env_values = true)]
    alert_secret: Option<String>,
    #[command(flatten)]
    oidc: OidcArgs,
}

/// Sign-in through the company's identity provider (OpenID Connect).
#[derive(Debug, Args)]
struct OidcArgs {
    /// The address people reach the console at (https://fleet.example.com); the identity
    /// provider sends them back to {URL}/auth/oidc/callback.
    #[arg(long, env = "PLURA_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Let people sign in through this OpenID Connect provider: its issuer URL, exactly as its
    /// discovery document has it. The client secret is read from PLURA_OIDC_CLIENT_SECRET or
    /// --oidc-client-secret-file.
    #[arg(
        long,
        env = "PLURA_OIDC_ISSUER",
        value_name = "URL",
        requires_all = ["public_url", "oidc_client_id"]
    )]
    oidc_issuer: Option<String>,
    /// This server's client id at the provider.
    #[arg(long, env = "PLURA_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// Read the client secret from this file (without it, PLURA_OIDC_CLIENT_SECRET; with
    /// neither, a public client proven by PKCE alone).
    #[arg(
        long,
        env = "PLURA_OIDC_CLIENT_SECRET_FILE",
        value_name = "FILE",
        requires = "oidc_issuer"
    )]
    oidc_client_secret_file: Option<PathBuf>,
    /// The scopes asked for, separated by spaces.
    #[arg(long, env = "PLURA_OIDC_SCOPES", default_value = oidc::DEFAULT_SCOPES, requires = "oidc_issuer")]
    oidc_scopes: String,
    /// The claim (of the ID token or the UserInfo answer) whose values give roles; a dotted
    /// path reaches into objects (realm_access.roles).
    #[arg(
        long,
        env = "PLURA_OIDC_ROLE_CLAIM",
        default_value = "groups",
        requires = "oidc_issuer"
    )]
    oidc_role_claim: String,
    /// Values of the role claim that make a person an admin (several: repeated, or separated
    /// by commas). The highest role matched wins; a person matching none is refused.
    #[arg(
        long,
        env = "PLURA_OIDC_ADMIN",
        value_name = "VALUE",
        num_args = 1..,
        value_delimiter = ',',
        requires = "oidc_issuer"
    )]
    oidc_admin: Vec<String>,
    /// Values of the role claim that make a person an operator.
    #[arg(
        long,
        env = "PLURA_OIDC_OPERATOR",
        value_name = "VALUE",
        num_args = 1..,
        value_delimiter = ',',
        requires = "oidc_issuer"
    )]
    oidc_operator: Vec<String>,
    /// Values of the role claim that make a person a monitor.
    #[arg(
        long,
        env = "PLURA_OIDC_MONITOR",
        value_name = "VALUE",
        num_args = 1..,
        value_delimiter = ',',
        requires = "oidc_issuer"
    )]
    oidc_monitor: Vec<String>,
    /// Trust the provider's certificate through this CA (PEM) besides the system's.
    #[arg(
        long,
        env = "PLURA_OIDC_CA_FILE",
        value_name = "FILE",
        requires = "oidc_issuer"
    )]
    oidc_ca_file: Option<PathBuf>,
}

impl OidcArgs {
    /// The relying party these settings make, if the server is to be one.
    fn check(self) -> anyhow::Result<Option<Arc<RelyingParty>>> {
        let (Some(issuer), Some(client_id), Some(public_url)) =
            (self.oidc_issuer, self.oidc_client_id, self.public_url)
        else {
            return Ok(None);
        };
        let client_secret = match &self.oidc_client_secret_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| {
                        format!("cannot read --oidc-client-secret-file {}", file.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("PLURA_OIDC_CLIENT_SECRET").ok(),
        }
        .filter(|secret| !secret.is_empty());
        let party = RelyingParty::new(OidcSettings {
            issuer,
            client_id,
            client_secret,
            public_url,
            scopes: self
                .oidc_scopes
                .split_whitespace()
                .map(String::from)
                .collect(),
            roles: RoleRules {
                claim: self.oidc_role_claim,
                admin: self.oidc_admin,
                operator: self.oidc_operator,
                monitor: self.oidc_monitor,
            },
            ca_file: self.oidc_ca_file,
        })?;
        tracing::info!(
            issuer = party.issuer(),
            "sign-in through the identity provider is on"
        );
        Ok(Some(Arc::new(party)))
    }
}

/// Everything `serve` was told, checked: nothing reaches the database before this is done.
pub(super) struct Settings {
    listen: SocketAddr,
    policy: LivenessPolicy,
    limits: server::Limits,
    front: server::Front,
    webhooks: CommandLineWebhooks,
    oidc: Option<Arc<RelyingParty>>,
}

/// The alert webhooks the command line names, with the secret that signs them.
struct CommandLineWebhooks {
    json: Vec<String>,
    slack: Vec<String>,
    secret: String,
}

impl ServeArgs {
    /// Checks every setting (and reads the files they name) before anything else is done.
    pub(super) fn check(self) -> anyhow::Result<Settings> {
        let policy = LivenessPolicy {
            heartbeat_interval: self.heartbeat_interval.0,
            prune_stopped_after: self.prune_stopped_after,
            keep_events_for: Some(self.keep_events_for.0).filter(|d| !d.is_zero()),
            cloud: CloudPolicy {
                verdict_wait: self.cloud_verdict_wait.0,
                alert_on_scale_in: self.alert_on_scale_in,
                coverage_grace: self.coverage_grace.0,
            },
            ..LivenessPolicy::default()
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Certified::load(TlsFiles { cert, key })?)),
            _ => None,
        };
        let webhooks = CommandLineWebhooks::check(
            self.alert_webhooks,
            self.alert_slack,
            self.alert_slack_file.as_deref(),
            self.alert_secret,
        )?;
        let oidc = self.oidc.check()?;
        Ok(Settings {
            listen: self.listen,
            policy,
            limits: server::Limits {
                max_connections: self.max_connections,
                max_connections_per_source: Some(self.max_connections_per_source)
                    .filter(|n| *n > 0),
                logins_per_source: Some(self.logins_per_source).filter(|n| *n > 0),
                max_agents: self.max_agents,
                webhooks_to_loopback: self.allow_loopback_webhooks,
                ..server::Limits::default()
            },
            front: server::Front {
                tls,
                proxies: server::TrustedProxies::new(self.trusted_proxies),
                proxy_protocol: self.proxy_protocol,
            },
            webhooks,
            oidc,
        })
    }
}

impl CommandLineWebhooks {
    fn check(
        json: Vec<String>,
        mut slack: Vec<String>,
        slack_file: Option<&Path>,
        secret: Option<String>,
    ) -> anyhow::Result<Self> {
        if let Some(file) = slack_file {
            slack.extend(slack_urls_from(file)?);
        }
        for url in json.iter().chain(&slack) {
            plura_proto::validate_webhook_url(url).with_context(|| {
                format!("--alert-webhook/--alert-slack {}", redact_webhook_url(url))
            })?;
        }
        let secret = match secret {
            Some(secret) => {
                plura_proto::validate_secret(&secret).context("--alert-secret")?;
                secret
            }
            // Slack does not check signatures; a key nobody knows will do.
            None if json.is_empty() => secret::new_token("plura_whsec"),
            None => anyhow::bail!(
                "--alert-webhook needs a signing secret: set PLURA_ALERT_SECRET (at least 16 \
                 characters) and check the X-Plura-Signature-256 header with it"
            ),
        };
        Ok(Self {
            json,
            slack,
            secret,
        })
    }

    /// Makes the command line's webhooks the ones it names now (none when it names none).
    async fn record(&self, store: &store::SqlStore) -> anyhow::Result<()> {
        alerts::set_command_line_webhooks(store, &self.json, &self.slack, &self.secret)
            .await
            .context("cannot record the alert webhooks")?;
        let count = self.json.len() + self.slack.len();
        if count > 0 {
            tracing::info!("alerts go to {count} webhook(s) from the command line");
        }
        Ok(())
    }
}

/// Slack webhook URLs from `file`, one a line; blank lines and `#` comments are skipped.
fn slack_urls_from(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --alert-slack-file {}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Serves with `settings` over `store` until a signal ends it.
pub(super) async fn serve(store: store::SqlStore, settings: Settings) -> anyhow::Result<()> {
    let Settings {
        listen,
        policy,
        limits,
        front,
        webhooks,
        oidc,
    } = settings;
    tracing::info!(database = ?store.backend(), "database ready");
    for (id, ip, hostname) in store.hostnames_not_in_normal_form(100).await? {
        tracing::warn!(
            agent = id,
            %ip,
            %hostname,
            "this agent's hostname is not in its normal form (lower case, no trailing dot) \
             because another agent of the same address has that form: they are one host; delete \
             the one that is not in use"
        );
    }
    if let Some(file) = auth::bootstrap(&store, &state_directory(&store)).await? {
        tracing::info!(
            file = %file.display(),
            "first start: wrote an admin API token to this file, readable by its owner only; \
             read it, keep it safe, then delete the file"
        );
        println!("First start: the admin API token is in {}", file.display());
        println!("Make the token agents enroll with: plura-server enrollment-token");
        println!(
            "Make more tokens, and users for the console: plura-server token create --role \
             admin|operator|monitor --name NAME; plura-server user create --name NAME --role ROLE \
             (with the same --database or PLURA_DATABASE_URL)"
        );
    }
    webhooks.record(&store).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let scheme = if front.tls.is_some() { "https" } else { "http" };
    if front.tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {listen}: the enrollment token, agents' keys and passwords \
             travel in the clear; give --tls-cert and --tls-key, or listen on loopback behind a \
             TLS proxy"
        );
    }
    // On stdout, for people and scripts (with --listen 127.0.0.1:0, the port it got).
    println!("Listening on {scheme}://{}", listener.local_addr()?);
    let files = server::raise_file_limit();
    tracing::info!("open-file limit: {files}");
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(server::cancel_on_signal(shutdown.clone()));
    let served = server::serve(
        listener,
        front,
        Arc::new(store),
        policy,
        limits,
        oidc,
        shutdown,
    )
    .await;
    signals.abort();
    served
}

/// Where the server keeps files of its own: systemd's `$STATE_DIRECTORY`, else the SQLite
/// database's directory, else the working directory.
fn state_directory(store: &store::SqlStore) -> PathBuf {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        // systemd lists several, separated by colons, when the unit names several.
        if let Some(first) = std::env::split_paths(&dirs).next() {
            return first;
        }
    }
    store
        .backend()
        .sqlite_file()
        .and_then(|file| file.parent().map(PathBuf::from))
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A duration as people write it (`10s`, `90d`, `1h30m`), shown in its largest whole unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span(Duration);

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(Span)
            .map_err(|e| format!("{text:?} is not a duration such as 10s or 90d: {e}"))
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.0.as_secs();
        let unit = [(86_400, "d"), (3_600, "h"), (60, "m")]
            .into_iter()
            .find(|(size, _)| seconds > 0 && seconds % size == 0 && self.0.subsec_nanos() == 0);
        match unit {
            Some((size, name)) => write!(f, "{}{name}", seconds / size),
            None => write!(f, "{}", humantime::format_duration(self.0)),
        }
    }
}

/// A duration of at least a second (a heartbeat interval).
fn at_least_a_second(text: &str) -> Result<Span, String> {
    let span: Span = text.parse()?;
    if span.0 < Duration::from_secs(1) {
        return Err(format!("{text} is less than 1s"));
    }
    Ok(span)
}

/// A CIDR range, or one address (a range of one).
fn parse_range(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a CIDR range (10.0.0.0/8)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_as_they_are_written() {
        for text in ["10s", "90d", "2h", "15m", "1s 500ms", "0s"] {
            assert_eq!(text.parse::<Span>().unwrap().to_string(), text);
        }
        assert_eq!("1h30m".parse::<Span>().unwrap().to_string(), "90m");
        assert!(at_least_a_second("500ms").is_err());
    }
}
