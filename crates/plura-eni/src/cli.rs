//! The `plura-eni` command line: one function per subcommand.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::claim::{self, ClaimPolicy};
use crate::error::EniError;
use crate::fleet::FleetClient;
use crate::pool::HostnameTemplate;
use crate::provision::{self, Plan};
use crate::watch::Watch;
use crate::{aws, host, lifecycle, pool, status, templates};

/// A bounded pool of fixed-IP network interfaces for EC2 Auto Scaling groups: each new
/// instance claims one as eth1 and takes its hostname, so it comes back as the same agent.
#[derive(Debug, Parser)]
#[command(name = "plura-eni", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (or top up to) --size interfaces per subnet, with fixed IPs and hostname tags.
    Provision(ProvisionArgs),
    /// At boot: attach a free interface of the pool in this zone as eth1 and take its hostname.
    /// Prints {eni, ip, hostname} as one JSON line. Exit 3: the pool is empty.
    Claim(ClaimArgs),
    /// The pool's interfaces: zone, IP, hostname, state, instance; counts per zone.
    Status(StatusArgs),
    /// Detach this instance's pool interface (for a clean scale-in).
    Release(PoolArg),
    /// Print the launch template's user data: claim, then start the agent. No keys in it.
    UserData(UserDataArgs),
    /// Print a CloudFormation template: interfaces, instance role, launch template, group.
    Cloudformation(CloudformationArgs),
    /// Print a least-privilege IAM policy: the instance role's for the pool, or the watch's.
    Policy(PolicyArgs),
    /// Ask EC2 why agents went silent and which instances of the watched groups have no
    /// agent, and tell the PLURA server, every --interval (or --once). The operator token is
    /// read from PLURA_TOKEN or --token-file.
    Watch(WatchArgs),
}

impl Cli {
    pub async fn run(self) -> Result<(), EniError> {
        match self.command {
            Command::Provision(args) => provision(args).await,
            Command::Claim(args) => claim(args).await,
            Command::Status(args) => status(args).await,
            Command::Release(args) => release(args).await,
            Command::UserData(args) => user_data(args),
            Command::Cloudformation(args) => cloudformation(args),
            Command::Policy(args) => {
                print_json(&match args.pool {
                    Some(pool) => templates::policy(&pool),
                    None => templates::watch_policy(),
                });
                Ok(())
            }
            Command::Watch(args) => watch(args).await,
        }
    }
}

#[derive(Debug, Args)]
struct PoolArg {
    /// The pool's name (tag plura:pool).
    #[arg(long)]
    pool: String,
}

/// How the pool is laid out over the zones.
#[derive(Debug, Args)]
struct Layout {
    /// A subnet per availability zone for the pool's interfaces (repeat the flag).
    #[arg(long = "subnet", required = true)]
    subnets: Vec<String>,
    /// Interfaces per subnet.
    #[arg(long)]
    size: u32,
    /// Hostnames of the interfaces; {n} counts from 1 [default: <pool>-{n}].
    #[arg(long)]
    hostname_template: Option<String>,
    /// Description of the interfaces; hand-made ones with it are adopted [default: plura-<pool>].
    #[arg(long)]
    description: Option<String>,
}

impl Layout {
    fn hostnames(&self, pool: &str) -> Result<HostnameTemplate, EniError> {
        let template = self.hostname_template.clone();
        HostnameTemplate::new(template.unwrap_or_else(|| format!("{pool}-{{n}}")))
    }

    fn description(&self, pool: &str) -> String {
        self.description
            .clone()
            .unwrap_or_else(|| format!("plura-{pool}"))
    }
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    #[command(flatten)]
    pool: PoolArg,
    #[command(flatten)]
    layout: Layout,
    /// Security group of the new interfaces (repeat the flag) [default: the VPC's].
    #[arg(long = "security-group")]
    security_groups: Vec<String>,
}

async fn provision(args: ProvisionArgs) -> Result<(), EniError> {
    let PoolArg { pool } = args.pool;
    let plan = Plan {
        hostnames: args.layout.hostnames(&pool)?,
        description: args.layout.description(&pool),
        subnets: args.layout.subnets,
        size: args.layout.size,
        security_groups: args.security_groups,
        pool,
    };
    let report = provision::provision(&ec2(None).await, &plan).await?;
    for line in &report {
        let m = &line.member;
        println!(
            "{:<8} {} {} {} {}",
            line.action.as_str(),
            m.eni,
            m.zone,
            m.ip,
            m.hostname.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
struct ClaimArgs {
    #[command(flatten)]
    pool: PoolArg,
    /// Attach and print, but leave the host alone (no wait for the interface, no hostname).
    #[arg(long)]
    attach_only: bool,
    /// Complete this launch lifecycle hook: CONTINUE on success, ABANDON on failure.
    #[arg(long)]
    lifecycle_hook: Option<String>,
    /// How long to wait for interfaces that terminating instances still hold.
    #[arg(long, default_value = "180s", value_parser = parse_seconds)]
    patience: Duration,
    /// How long to wait for the attached interface to come up with its address.
    #[arg(long, default_value = "120s", value_parser = parse_seconds)]
    interface_timeout: Duration,
    /// Where /etc/hostname is (for images being prepared in a chroot).
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
}

async fn claim(args: ClaimArgs) -> Result<(), EniError> {
    let pool = args.pool.pool;
    let me = aws::whoami().await?;
    let config = aws::config(Some(&me.region)).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let policy = ClaimPolicy {
        patience: args.patience,
        ..ClaimPolicy::default()
    };
    let outcome = async {
        let claimed = claim::claim(&ec2, &pool, &me, &policy).await?;
        if !args.attach_only {
            settle_host(&claimed.member, args.interface_timeout, &args.root).await?;
        }
        Ok::<_, EniError>(claimed)
    }
    .await;
    if let Some(hook) = &args.lifecycle_hook {
        let asg = aws_sdk_autoscaling::Client::new(&config);
        match lifecycle::complete(&asg, hook, &me.instance_id, outcome.is_ok()).await {
            Err(e) if outcome.is_ok() => return Err(e),
            // The claim's own failure says more; it is the one reported below.
            Err(e) => tracing::error!("{e}"),
            Ok(()) => {}
        }
    }
    let claimed = outcome?;
    let m = &claimed.member;
    println!(
        "{}",
        json!({
            "eni": m.eni,
            "ip": m.ip,
            "hostname": m.hostname,
            "zone": m.zone,
            "instance": me.instance_id,
            "attached_now": claimed.attached_now,
        })
    );
    Ok(())
}

/// Waits for the claimed interface on this host, then takes its hostname.
async fn settle_host(member: &pool::Member, within: Duration, root: &Path) -> Result<(), EniError> {
    let missing = |what: &str| EniError::Unexpected(format!("{} shows no {what}", member.eni));
    let ip: Ipv4Addr = member.ip.parse().map_err(|_| missing("IPv4 address"))?;
    let mac = member
        .mac
        .as_deref()
        .ok_or_else(|| missing("MAC address"))?;
    let name = host::wait_for_interface(&member.eni, mac, ip, within).await?;
    tracing::info!("{} is up as {name} with {ip}", member.eni);
    if let Some(hostname) = &member.hostname {
        host::take_hostname(root, hostname)?;
        tracing::info!("hostname is now {hostname}");
    }
    Ok(())
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    pool: PoolArg,
    /// One JSON array instead of a table.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// The free and in-use counts per zone in Prometheus's text format (for node_exporter's
    /// textfile collector) instead of a table.
    #[arg(long)]
    prometheus: bool,
    /// Exit with code 5, naming them, when zones have fewer than N free interfaces.
    #[arg(long, value_name = "N")]
    warn_below: Option<usize>,
}

async fn status(args: StatusArgs) -> Result<(), EniError> {
    let pool = args.pool.pool;
    let members = pool::members(&ec2(None).await, &pool, None).await?;
    if args.json {
        print_json(&serde_json::to_value(&members).expect("members serialize"));
    } else if args.prometheus {
        print!("{}", status::prometheus(&pool, &members));
    } else {
        print!("{}", status::table(&pool, &members));
    }
    match args.warn_below {
        Some(below) => {
            let zones = status::low_zones(&members, below);
            if zones.is_empty() {
                Ok(())
            } else {
                Err(EniError::PoolLow { pool, below, zones })
            }
        }
        None => Ok(()),
    }
}

async fn release(PoolArg { pool }: PoolArg) -> Result<(), EniError> {
    let me = aws::whoami().await?;
    let ec2 = ec2(Some(&me.region)).await;
    match claim::release(&ec2, &pool, &me).await? {
        Some(m) => println!(
            "{}",
            json!({"released": m.eni, "ip": m.ip, "hostname": m.hostname})
        ),
        None => eprintln!("{} holds no interface of pool {pool:?}", me.instance_id),
    }
    Ok(())
}

#[derive(Debug, Args)]
struct UserDataArgs {
    #[command(flatten)]
    pool: PoolArg,
    #[arg(long)]
    lifecycle_hook: Option<String>,
    /// The agent's systemd unit.
    #[arg(long, default_value = "plura-agent")]
    agent_service: String,
    /// Install the agent package (.deb or .rpm, with plura-eni) from this https URL or s3://
    /// path first, for images that do not have it.
    #[arg(long, value_name = "URL")]
    install_agent: Option<String>,
}

fn user_data(args: UserDataArgs) -> Result<(), EniError> {
    if let Some(package) = &args.install_agent {
        templates::check_package_source(package)
            .map_err(|why| EniError::Invalid(format!("--install-agent {package:?}: {why}")))?;
    }
    let hook = args.lifecycle_hook.as_deref();
    let script = templates::user_data(
        &args.pool.pool,
        hook,
        &args.agent_service,
        args.install_agent.as_deref(),
    );
    print!("{script}");
    Ok(())
}

#[derive(Debug, Args)]
struct CloudformationArgs {
    #[command(flatten)]
    pool: PoolArg,
    #[command(flatten)]
    layout: Layout,
}

fn cloudformation(args: CloudformationArgs) -> Result<(), EniError> {
    let pool = &args.pool.pool;
    print_json(&templates::cloudformation(&templates::Stack {
        pool,
        subnets: &args.layout.subnets,
        size: args.layout.size,
        hostnames: &args.layout.hostnames(pool)?,
        description: &args.layout.description(pool),
    }));
    Ok(())
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// The pool's name (tag plura:pool): the instance role's policy.
    #[arg(long, required_unless_present = "watch", conflicts_with = "watch")]
    pool: Option<String>,
    /// The watch's policy instead: reads instances and groups, writes nothing.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The PLURA server's URL, e.g. https://plura.example.com (http:// only to this host).
    #[arg(long, env = "PLURA_SERVER")]
    server: String,
    /// An Auto Scaling group whose coverage is reported (repeat the flag).
    #[arg(long = "asg", value_name = "NAME")]
    groups: Vec<String>,
    /// Time between rounds.
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    interval: Duration,
    /// Run one round and exit (0 once the server has the report).
    #[arg(long)]
    once: bool,
    /// Read the operator token from this file instead of PLURA_TOKEN.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust the server's certificate if it chains to these CA certificates (PEM), besides the
    /// system's store.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<String>,
    /// Trust only the certificate or CA with this SHA-256 fingerprint (as plura.conf's
    /// server_fingerprint).
    #[arg(long, value_name = "SHA256")]
    server_fingerprint: Option<plura_proto::Fingerprint>,
}

async fn watch(args: WatchArgs) -> Result<(), EniError> {
    let token = match &args.token_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|source| EniError::Host {
                what: format!("--token-file {}", file.display()),
                source,
            })?
            .trim()
            .to_string(),
        None => std::env::var("PLURA_TOKEN").map_err(|_| {
            EniError::Invalid(
                "no operator token: set PLURA_TOKEN or give --token-file (plura-server token \
                 create --role operator makes one)"
                    .into(),
            )
        })?,
    };
    let trust = plura_agent::trust::Trust {
        ca_file: args.ca_file.as_deref(),
        server_fingerprint: args.server_fingerprint,
    };
    let fleet = FleetClient::new(&args.server, token, trust)?;
    let mut watch = Watch::new(fleet, args.groups).await;
    if args.once {
        let round = watch.round().await?;
        println!("{}", round.describe());
        return Ok(());
    }
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    watch.run(args.interval, stop).await;
    Ok(())
}

/// SIGINT or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `180s` or `180`: a whole number of seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.strip_suffix('s')
        .unwrap_or(text)
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a number of seconds, e.g. 180s"))
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

async fn ec2(region: Option<&str>) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&aws::config(region).await)
}
