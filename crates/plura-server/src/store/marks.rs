//! What each server has written of what it heard, so that silence is judged only on time the
//! servers could hear; and the write a readiness check makes.

use async_trait::async_trait;
use plura_proto::Timestamp;

use super::Result;

#[async_trait]
pub trait MarkStore: Send + Sync {
    /// Records that `server` has written every heartbeat it heard before `through`.
    async fn mark_written(&self, server: &str, through: Timestamp) -> Result<()>;

    /// Every server's mark: (server, written through).
    async fn written_marks(&self) -> Result<Vec<(String, Timestamp)>>;

    /// Forgets the marks of servers that wrote none since `cutoff`; answers how many.
    async fn forget_marks_before(&self, cutoff: Timestamp) -> Result<u64>;

    /// A write of a row of `server`'s own in a transaction of its own: answers once the
    /// database takes writes (a read-only standby, a full disk or a read-only file system fail
    /// it).
    async fn probe(&self, server: &str, at: Timestamp) -> Result<()>;
}
