//! Embedded, versioned schema migrations, safe when several replicas start at once.

use std::collections::HashSet;

use tokio_postgres::Client;

/// One schema change. Versions are applied in ascending order, each in its own transaction,
/// and recorded in `steward_migrations`; an applied version is never run again.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Applied in increasing order, each once.
    pub version: i32,
    /// Recorded with the version, for people.
    pub name: &'static str,
    /// The statements, run in one transaction.
    pub sql: &'static str,
}

/// The advisory lock that serialises migration runs across replicas ("STEWARD" in ASCII).
const LOCK_KEY: i64 = 0x0053_5445_5741_5244;

/// Applies the migrations `client`'s database lacks; returns the versions applied now.
///
/// Two replicas starting together both call this: the session advisory lock makes the second
/// wait until the first is done, and it then finds nothing left to apply.
pub async fn migrate(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let outcome = apply(client, migrations).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = outcome?;
    unlocked?;
    Ok(applied)
}

async fn apply(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS steward_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let done: HashSet<i32> = client
        .query("SELECT version FROM steward_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    let mut applied = Vec::new();
    for migration in pending {
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO steward_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tx.commit().await?;
        log::info!(target: "steward::db", "applied migration {} ({})", migration.version, migration.name);
        applied.push(migration.version);
    }
    Ok(applied)
}
