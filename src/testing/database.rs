//! A database of its own for each test: copied from a template that holds the service's
//! migrations (built once per set of migrations), dropped when the test ends, pass or fail.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use steward_actors::migrations::{migrate, Migration};
use tokio::sync::Mutex;
use tokio_postgres::NoTls;

use super::stores::{database_url, with_database};

/// A test's database; dropped (`WITH (FORCE)`, so open connections do not keep it) when this
/// value is, which unwinding after a failed assertion does too.
pub struct TestDb {
    /// Its name on the test server.
    pub name: String,
    /// Its URL, straight to the server (not through a proxy).
    pub url: String,
}

/// Templates built by this process, by the hash of their migrations.
static TEMPLATES: Mutex<BTreeMap<u64, String>> = Mutex::const_new(BTreeMap::new());

/// An advisory lock key on the server: test processes running at once must not build the same
/// template twice.
const TEMPLATE_LOCK: i64 = 0x5745_5741_5244;

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .expect("connect to the test PostgreSQL server (STEWARD_TEST_DATABASE_URL)");
    tokio::spawn(connection);
    client
}

/// The template holding `migrations`, named after them so that a new migration makes a new
/// template.
async fn template(migrations: &'static [Migration]) -> String {
    let mut hasher = DefaultHasher::new();
    for migration in migrations {
        (migration.version, migration.sql).hash(&mut hasher);
    }
    let hash = hasher.finish();
    let mut templates = TEMPLATES.lock().await;
    if let Some(name) = templates.get(&hash) {
        return name.clone();
    }
    let name = format!("steward_template_{hash:016x}");
    let admin = admin_client().await;
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("lock the template");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("look for the template")
        .is_some();
    if !exists {
        // Built under another name and renamed: a template half built by a test process that
        // died is never used.
        let building = format!("{name}_building_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create the template");
        let url = with_database(&database_url(), &building);
        let (mut client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("connect to the template");
        let connection = tokio::spawn(connection);
        migrate(&mut client, migrations)
            .await
            .expect("migrate the template");
        drop(client);
        let _ = connection.await;
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .expect("name the template");
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("unlock the template");
    templates.insert(hash, name.clone());
    name
}

impl TestDb {
    /// A fresh database holding `migrations`.
    pub async fn create(migrations: &'static [Migration]) -> Self {
        let template = template(migrations).await;
        let name = format!("steward_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_client().await;
        let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
        let mut attempts = 0;
        // Copies of one template started at the same instant collide ("source database is
        // being accessed by other users"); try again.
        while let Err(error) = admin.batch_execute(&create).await {
            attempts += 1;
            assert!(attempts < 50, "create the test database: {error}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let url = with_database(&database_url(), &name);
        Self { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime that is being torn down (or none); use one of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&database_url(), NoTls).await
                {
                    tokio::spawn(connection);
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = client.batch_execute(&drop).await;
                }
            });
        })
        .join();
    }
}
