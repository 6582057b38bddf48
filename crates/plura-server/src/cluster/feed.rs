//! The change feed: what the servers on one PostgreSQL database commit, heard with LISTEN on a
//! connection of this server's own, in the order the changes committed. The notices are sent by
//! the committing transactions (`crates/plura-server/src/store/sql/notices.rs`).

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::store::{Elsewhere, Result, notices};

/// A notice heard: what it tells, and whether this server made the change.
#[derive(Debug)]
pub struct Notice {
    pub from_this_server: bool,
    pub told: Elsewhere,
}

/// The notices of every server, this one's too.
pub struct Feed {
    listener: PgListener,
    me: String,
}

impl Feed {
    pub(super) async fn connect(url: &str, me: String) -> Result<Self> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(notices::CHANNEL).await?;
        Ok(Self { listener, me })
    }

    /// The next notice. A lost connection is made again, and told as `Missed`: what was said
    /// meanwhile is not heard.
    pub async fn next(&mut self) -> Notice {
        loop {
            let told = match self.listener.try_recv().await {
                Ok(Some(notice)) => match notices::read_payload(notice.payload()) {
                    Some((server, told)) => {
                        return Notice {
                            from_this_server: server == self.me,
                            told,
                        };
                    }
                    None => continue,
                },
                // Lost; the next call connects again.
                Ok(None) => Elsewhere::Missed,
                Err(e) => {
                    tracing::warn!("listening for other servers' changes: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Elsewhere::Missed
                }
            };
            return Notice {
                from_this_server: false,
                told,
            };
        }
    }
}
