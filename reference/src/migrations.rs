//! The schema of the reference API, embedded in the binary and applied by the database actor
//! at start-up (or alone by `steward migrate`).

use steward::actors::migrations::Migration;

/// The reference service's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "ledger",
        sql: include_str!("migrations/0001_ledger.sql"),
    },
    Migration {
        version: 2,
        name: "idempotency_retention",
        sql: include_str!("migrations/0002_idempotency_retention.sql"),
    },
    Migration {
        version: 3,
        name: "account_owners",
        sql: include_str!("migrations/0003_account_owners.sql"),
    },
];
