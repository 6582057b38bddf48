//! The `plura-server` command line: its subcommands, and the ones small enough to live here
//! (`tls init`, `enrollment-token`, `backup`). Serving is in `serve.rs`, tokens and users in
//! `credentials.rs`.

mod credentials;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, FromArgMatches, Parser, Subcommand};

use crate::enrollment::{self, Issued};
use crate::store::{self, redact_url};
use crate::tls;
use credentials::{TokenCommand, UserCommand, token_command, user_command};
use serve::{ServeArgs, serve};

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
    /// Copy a SQLite database, while the server runs, to a new file readable by its owner only
    /// (PostgreSQL: pg_dump). The database is opened read-only: never migrated or changed.
    Backup {
        /// The new file to write.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
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

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let Cli { database, command } = self;
        // Without a subcommand, `serve` with its defaults (and the environment's settings).
        let command = match command {
            Some(command) => command,
            None => {
                let serve = ServeArgs::augment_args(clap::Command::new("serve"));
                let matches = serve.try_get_matches_from(["serve"])?;
                Command::Serve(Box::new(ServeArgs::from_arg_matches(&matches)?))
            }
        };
        let open = || async {
            store::open(&database)
                .await
                .with_context(|| format!("cannot open the database {}", redact_url(&database)))
        };
        match command {
            // What a server is told is checked before the database is opened.
            Command::Serve(args) => {
                let settings = args.check()?;
                serve(open().await?, settings).await
            }
            Command::Token(command) => token_command(&open().await?, command).await,
            Command::User(command) => user_command(&open().await?, command).await,
            Command::EnrollmentToken(args) => enrollment_token(&open().await?, args).await,
            Command::Tls(TlsCommand::Init { hostnames, out }) => tls_init(&hostnames, &out),
            Command::Backup { to } => {
                let bytes = store::backup(&database, &to).await?;
                eprintln!(
                    "Backed up {} to {} ({bytes} bytes).",
                    redact_url(&database),
                    to.display()
                );
                Ok(())
            }
        }
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
