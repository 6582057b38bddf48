//! The `plura-server` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use plura_proto::{Role, Timestamp, redact_webhook_url};

use crate::alerts;
use crate::auth;
use crate::credentials;
use crate::enrollment::{self, Issued};
use crate::fleet::{DEFAULT_EVENT_RETENTION, LivenessPolicy};
use crate::secret;
use crate::server;
use crate::store::{self, Actor, CredentialStore, UserChange, redact_url};
use crate::tls::{self, Certified, TlsFiles};

#[derive(Debug, Parser)]
#[command(
    name = "plura-server",
    version,
    about = "PLURA Fleet management server"
)]
pub struct Cli {
    /// The database: sqlite://PATH (created on first start) or postgres://USER:PASS@HOST/DB.
    #[arg(
        long,
        global = true,
        env = "PLURA_DATABASE_URL",
        default_value = "sqlite://plura.db",
        hide_env_values = true
    )]
    database: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Manage API tokens for people and scripts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage people who sign in to the console with a name and password.
    #[command(subcommand)]
    User(UserCommand),
    /// Make the token agents enroll with (`enrollment_token` in plura.conf) and print it, once:
    /// only its hash is kept.
    EnrollmentToken(EnrollmentArgs),
    /// Certificates for serving HTTPS.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Make a private CA and a server certificate it signs (for a quick start; a certificate
    /// from the company's CA or a public one is better). Touches no database.
    Init {
        /// A name (or IP address) agents reach the server by. Repeatable; the first is the
        /// certificate's common name.
        #[arg(long = "hostname", value_name = "NAME", required = true)]
        hostnames: Vec<String>,
        /// Where to write ca.pem, ca-key.pem, server.pem and server-key.pem.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct EnrollmentArgs {
    /// Replace it with a new one, printed once.
    #[arg(long)]
    rotate: bool,
    /// With --rotate: how long the old token keeps working (0 refuses it at once).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, requires = "rotate")]
    grace: Duration,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PLURA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How often agents send a heartbeat; three missed make an agent stopped.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Delete agents stopped for longer than this (e.g. 14d). Off unless given.
    #[arg(long, value_parser = humantime::parse_duration)]
    prune_stopped_after: Option<Duration>,
    /// Delete agents' history events older than this; 0 keeps them forever.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    keep_events_for: Duration,
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
    #[arg(long, default_value_t = 10)]
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
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            heartbeat_interval: LivenessPolicy::default().heartbeat_interval,
            prune_stopped_after: None,
            keep_events_for: DEFAULT_EVENT_RETENTION,
            max_connections: None,
            max_connections_per_source: server::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            logins_per_source: 10,
            max_agents: None,
            allow_loopback_webhooks: false,
            alert_webhooks: Vec::new(),
            alert_slack: Vec::new(),
            alert_slack_file: None,
            alert_secret: None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token; it is printed once, alone on the last line.
    Create {
        /// admin, operator or monitor.
        #[arg(long)]
        role: Role,
        /// Who or what it is for, unique; shown in the list and the audit log.
        #[arg(long)]
        name: String,
        /// How long it works (e.g. 90d, 12h); without it, until it is revoked.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List API tokens (never their secrets).
    List {
        /// As JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token by its name or id; it stops working within a second, on every server.
    Revoke {
        #[arg(value_name = "NAME|ID")]
        token: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; without --password-stdin a password is generated and printed once, alone
    /// on the last line.
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator or monitor.
        #[arg(long)]
        role: Role,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and their open sign-ins.
    List {
        /// As JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop a user from signing in, and end its sign-ins.
    Disable { name: String },
    /// Let a disabled user sign in again.
    Enable { name: String },
    /// Delete a user and end its sign-ins.
    Delete { name: String },
    /// Set a user's password, which ends its sign-ins; without --password-stdin one is
    /// generated and printed once.
    SetPassword {
        name: String,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        if let Some(Command::Tls(TlsCommand::Init { hostnames, out })) = &self.command {
            return tls_init(hostnames, out);
        }
        let store = store::open(&self.database)
            .await
            .with_context(|| format!("cannot open the database {}", redact_url(&self.database)))?;
        match self
            .command
            .unwrap_or_else(|| Command::Serve(Box::default()))
        {
            Command::Serve(args) => serve(store, *args).await,
            Command::Token(command) => token_command(&store, command).await,
            Command::User(command) => user_command(&store, command).await,
            Command::EnrollmentToken(args) => enrollment_token(&store, args).await,
            Command::Tls(_) => unreachable!("answered before the database is opened"),
        }
    }
}

/// Who the command line acts as in the audit log, now.
fn command_line() -> Actor<'static> {
    Actor {
        name: credentials::COMMAND_LINE,
        at: Timestamp::now(),
    }
}

async fn token_command(store: &store::SqlStore, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            role,
            name,
            expires_in,
        } => {
            let (token, info) = credentials::create_token(
                store,
                &name,
                role,
                expires_in.as_deref(),
                command_line(),
            )
            .await?;
            match info.expires_at {
                Some(at) => eprintln!("Created a {role} token named {name:?}, until {at}."),
                None => eprintln!("Created a {role} token named {name:?}."),
            }
            eprintln!("It is shown only this once:");
            println!("{token}");
        }
        TokenCommand::List { json } => {
            let tokens = store.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                let now = Timestamp::now();
                print_table(
                    ["ID", "NAME", "ROLE", "CREATED", "LAST USED", "EXPIRES"],
                    tokens.iter().map(|t| {
                        [
                            t.id.to_string(),
                            t.name.clone(),
                            t.role.to_string(),
                            t.created_at.to_string(),
                            shown(t.last_used_at, "never"),
                            match t.expires_at {
                                Some(at) if at <= now => format!("{at} (expired)"),
                                at => shown(at, "never"),
                            },
                        ]
                    }),
                );
            }
        }
        TokenCommand::Revoke { token } => {
            match credentials::revoke_token(store, &token, command_line()).await? {
                Some(revoked) => eprintln!(
                    "Revoked the {} token {:?} (id {}).",
                    revoked.role, revoked.name, revoked.id
                ),
                None => anyhow::bail!("no API token is named {token:?} or has that id"),
            }
        }
    }
    Ok(())
}

async fn user_command(store: &store::SqlStore, command: UserCommand) -> anyhow::Result<()> {
    let change = match command {
        UserCommand::Create {
            name,
            role,
            password_stdin,
        } => {
            let given = password_stdin.then(read_password).transpose()?;
            let (_, made) =
                credentials::create_user(store, &name, role, given, command_line()).await?;
            eprintln!("Created the {role} user {name:?}.");
            if let Some(password) = made {
                eprintln!("Its password is shown only this once:");
                println!("{password}");
            }
            return Ok(());
        }
        UserCommand::List { json } => {
            let users = store.users(Timestamp::now()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                print_table(
                    [
                        "NAME",
                        "ROLE",
                        "CREATED",
                        "DISABLED",
                        "LAST SIGN-IN",
                        "SIGN-INS",
                    ],
                    users.iter().map(|u| {
                        [
                            u.name.clone(),
                            u.role.to_string(),
                            u.created_at.to_string(),
                            shown(u.disabled_at, "-"),
                            shown(u.last_sign_in_at, "-"),
                            u.sessions.to_string(),
                        ]
                    }),
                );
            }
            return Ok(());
        }
        UserCommand::SetPassword {
            name,
            password_stdin,
        } => {
            let (password, made) = if password_stdin {
                (read_password()?, false)
            } else {
                (secret::new_token("pw")[3..27].to_string(), true)
            };
            let changed =
                credentials::set_password(store, &name, password.clone(), command_line()).await?;
            let user = changed.with_context(|| format!("no user is named {name:?}"))?;
            eprintln!(
                "Set the password of {name:?}; its {} sign-in(s) ended.",
                user.sessions
            );
            if made {
                eprintln!("The new password is shown only this once:");
                println!("{password}");
            }
            return Ok(());
        }
        UserCommand::Disable { name } => (name, UserChange::Disable, "Disabled"),
        UserCommand::Enable { name } => (name, UserChange::Enable, "Enabled"),
        UserCommand::Delete { name } => (name, UserChange::Delete, "Deleted"),
    };
    let (name, change, done) = change;
    match store.change_user(&name, change, command_line()).await? {
        Some(user) => eprintln!("{done} the {} user {name:?}.", user.role),
        None => anyhow::bail!("no user is named {name:?}"),
    }
    Ok(())
}

/// The first line of standard input, without its line end.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn shown(at: Option<Timestamp>, otherwise: &str) -> String {
    at.map_or_else(|| otherwise.to_string(), |at| at.to_string())
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: impl Iterator<Item = [String; N]>) {
    let rows: Vec<[String; N]> = std::iter::once(header.map(String::from))
        .chain(rows)
        .collect();
    let widths: Vec<usize> = (0..N)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn tls_init(hostnames: &[String], out: &std::path::Path) -> anyhow::Result<()> {
    let made = tls::quick_start::init(hostnames, out)?;
    eprintln!(
        "Wrote the private CA {} (its key {}) and the server certificate {} (its key {}).",
        made.ca_cert.display(),
        made.ca_key.display(),
        made.cert.display(),
        made.key.display()
    );
    eprintln!(
        "Serve with: plura-server serve --tls-cert {} --tls-key {}",
        made.cert.display(),
        made.key.display()
    );
    eprintln!(
        "Agents trust it with ca_file= (a copy of {}) or server_fingerprint= in plura.conf; the \
         CA's fingerprint:",
        made.ca_cert.display()
    );
    println!("{}", made.ca_fingerprint);
    Ok(())
}

async fn enrollment_token(store: &store::SqlStore, args: EnrollmentArgs) -> anyhow::Result<()> {
    if args.rotate {
        let (token, until) = enrollment::rotate(store, args.grace).await?;
        match until {
            Some(until) => eprintln!(
                "Rotated. Put this token in the agents' plura.conf; the old one works until {until}."
            ),
            None => eprintln!(
                "Rotated. Put this token in the agents' plura.conf; the old one no longer works."
            ),
        }
        eprintln!("It is shown only this once:");
        println!("{token}");
        return Ok(());
    }
    match enrollment::issue(store).await? {
        Issued::Created(token) => {
            eprintln!(
                "Created the enrollment token (enrollment_token in plura.conf). It is shown only this once:"
            );
            println!("{token}");
            Ok(())
        }
        Issued::Exists => anyhow::bail!(
            "the enrollment token exists and is stored only as a hash, so it cannot be shown \
             again; make a new one with 'plura-server enrollment-token --rotate [--grace 1h]'"
        ),
    }
}

/// Slack webhook URLs from `file`, one a line; blank lines and `#` comments are skipped.
fn slack_urls_from(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --alert-slack-file {}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Makes the command line's webhooks the ones it names now (none when it names none).
async fn command_line_webhooks(store: &store::SqlStore, args: &ServeArgs) -> anyhow::Result<()> {
    let mut slack = args.alert_slack.clone();
    if let Some(file) = &args.alert_slack_file {
        slack.extend(slack_urls_from(file)?);
    }
    for url in args.alert_webhooks.iter().chain(&slack) {
        plura_proto::validate_webhook_url(url).with_context(|| {
            format!("--alert-webhook/--alert-slack {}", redact_webhook_url(url))
        })?;
    }
    let secret = match &args.alert_secret {
        Some(secret) => {
            plura_proto::validate_secret(secret).context("--alert-secret")?;
            secret.clone()
        }
        None if args.alert_webhooks.is_empty() => {
            // Slack does not check signatures; a key nobody knows will do.
            secret::new_token("plura_whsec")
        }
        None => anyhow::bail!(
            "--alert-webhook needs a signing secret: set PLURA_ALERT_SECRET (at least 16 \
             characters) and check the X-Plura-Signature-256 header with it"
        ),
    };
    alerts::set_command_line_webhooks(store, &args.alert_webhooks, &slack, &secret)
        .await
        .context("cannot record the alert webhooks")?;
    let count = args.alert_webhooks.len() + slack.len();
    if count > 0 {
        tracing::info!("alerts go to {count} webhook(s) from the command line");
    }
    Ok(())
}

async fn serve(store: store::SqlStore, args: ServeArgs) -> anyhow::Result<()> {
    let policy = LivenessPolicy {
        heartbeat_interval: args.heartbeat_interval,
        prune_stopped_after: args.prune_stopped_after,
        keep_events_for: Some(args.keep_events_for).filter(|d| !d.is_zero()),
        ..LivenessPolicy::default()
    };
    anyhow::ensure!(
        policy.heartbeat_interval >= Duration::from_secs(1),
        "--heartbeat-interval must be at least 1s"
    );
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(Certified::load(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?)),
        _ => None,
    };
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
    command_line_webhooks(&store, &args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {}: the enrollment token, agents' keys and passwords travel \
             in the clear; give --tls-cert and --tls-key, or listen on loopback behind a TLS \
             proxy",
            args.listen
        );
    }
    // On stdout, for people and scripts (with --listen 127.0.0.1:0, the port it got).
    println!("Listening on {scheme}://{}", listener.local_addr()?);
    let files = server::raise_file_limit();
    tracing::info!("open-file limit: {files}");
    let limits = server::Limits {
        max_connections: args.max_connections,
        max_connections_per_source: Some(args.max_connections_per_source).filter(|n| *n > 0),
        logins_per_source: Some(args.logins_per_source).filter(|n| *n > 0),
        max_agents: args.max_agents,
        webhooks_to_loopback: args.allow_loopback_webhooks,
        ..server::Limits::default()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(server::cancel_on_signal(shutdown.clone()));
    let front = server::Front {
        tls,
        proxies: server::TrustedProxies::new(args.trusted_proxies),
        proxy_protocol: args.proxy_protocol,
    };
    server::serve(listener, front, Arc::new(store), policy, limits, shutdown).await
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

/// A CIDR range, or one address (a range of one).
fn parse_range(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a CIDR range (10.0.0.0/8)"))
}
