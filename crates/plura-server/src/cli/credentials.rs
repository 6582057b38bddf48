//! `plura-server token …` and `user …`: API tokens and console users, from the server's own
//! command line.

use anyhow::Context;
use clap::Subcommand;

use plura_proto::{Role, Timestamp};

use crate::credentials;
use crate::store::{self, Actor, CredentialStore, UserChange};

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
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
pub(super) enum UserCommand {
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

/// Who the command line acts as in the audit log, now.
fn command_line() -> Actor<'static> {
    Actor {
        name: credentials::COMMAND_LINE,
        at: Timestamp::now(),
    }
}

pub(super) async fn token_command(
    store: &store::SqlStore,
    command: TokenCommand,
) -> anyhow::Result<()> {
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

pub(super) async fn user_command(
    store: &store::SqlStore,
    command: UserCommand,
) -> anyhow::Result<()> {
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
                (credentials::new_password(), true)
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
