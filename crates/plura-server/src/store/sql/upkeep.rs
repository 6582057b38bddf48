//! Upkeep of a shared database: the deltas of the agent counts folded up, and the agents'
//! statistics kept up with a fast-growing fleet.

use sqlx::AnyPool;

use crate::store::Result;

/// Count deltas kept before they are folded into one row per (dimension, value).
const DELTAS_TO_FOLD: i64 = 1000;

/// Sums the deltas of the agent counts up into one row per (dimension, value). Deltas that other
/// servers insert meanwhile are not in this statement's snapshot, so they stay, and count.
pub(super) async fn fold_counts(pool: &AnyPool) -> Result<()> {
    let deltas: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_counts")
        .fetch_one(pool)
        .await?;
    if deltas >= DELTAS_TO_FOLD {
        sqlx::query(
            "WITH folded AS (DELETE FROM agent_counts RETURNING dimension, value, n) \
             INSERT INTO agent_counts (dimension, value, n) \
             SELECT dimension, value, SUM(n) FROM folded GROUP BY dimension, value \
             HAVING SUM(n) <> 0",
        )
        .execute(pool)
        .await?;
        // The summary reads the whole table: the folded rows must not linger as dead ones.
        sqlx::query("VACUUM agent_counts").execute(pool).await?;
    }
    Ok(())
}

/// Fewest changed agents worth analysing for: below this a scan of every agent is cheap anyway.
const ANALYZE_AFTER_CHANGES: i64 = 1000;

/// Whether the agents changed more since their last analysis than they numbered at it
/// (`counted` is -1 before the first): the table has at least doubled.
fn outgrew_its_statistics(changed: i64, counted: i64) -> bool {
    changed >= ANALYZE_AFTER_CHANGES && changed > counted
}

/// Analyses the agents once they outgrow their statistics. A fleet registering at once doubles
/// the table again and again within autovacuum's minute, and meanwhile the planner, taking it
/// for as small as it last saw it, finds a batch's identities with a hash join over every agent
/// instead of the unique index. Each doubling costs one analysis, of a sample.
pub(super) async fn analyze_after_growth(pool: &AnyPool) -> Result<()> {
    let (changed, counted): (i64, i64) = sqlx::query_as(
        "SELECT s.n_mod_since_analyze, c.reltuples::bigint FROM pg_stat_user_tables s \
         JOIN pg_class c ON c.oid = s.relid WHERE s.relid = 'agents'::regclass",
    )
    .fetch_one(pool)
    .await?;
    if outgrew_its_statistics(changed, counted)
        && let Err(e) = sqlx::query("ANALYZE agents").execute(pool).await
    {
        // Autovacuum analyses them within a minute all the same (a role that does not own the
        // table may not).
        tracing::debug!("cannot analyse the agents: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_are_analysed_each_time_they_double() {
        assert!(outgrew_its_statistics(1000, -1), "never analysed");
        assert!(!outgrew_its_statistics(999, -1), "too few to matter");
        assert!(outgrew_its_statistics(2001, 2000));
        assert!(!outgrew_its_statistics(2000, 2000));
        assert!(!outgrew_its_statistics(50_000, 1_000_000));
    }
}
