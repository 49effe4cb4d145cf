//! The database actor: reads on one pipelined connection with cached prepared statements,
//! writes in transactions retried on serialization failures, every query under a deadline.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8::PooledConnection;
use bb8_postgres::PostgresConnectionManager;
use futures::future::LocalBoxFuture;
use opentelemetry::KeyValue;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row, Statement, Transaction};

use crate::backoff::Backoff;
use crate::deadline::Deadline;
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::migrations::{migrate, Migration};
use crate::pool::{Evicting, StorePool};
use crate::store::{describe_run, Backend, StoreActor};
use crate::trace::{handle_traced, Span, Traced, TracedActor};

/// The actor that owns the PostgreSQL pool.
pub type DbActor = StoreActor<Db>;

type Manager = PostgresConnectionManager<NoTls>;
type Leased = PooledConnection<'static, Evicting<Manager>>;

/// How the database actor runs queries (from `[postgres]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbConfig {
    /// Deadline of one query or transaction attempt. Past it the query is cancelled on the
    /// server too, so a caller that went away leaves no work running.
    pub query_timeout: Duration,
    /// Retries of a transaction aborted by a serialization failure or a deadlock.
    pub tx_max_retries: u32,
    /// Delay between those retries.
    pub tx_backoff: Backoff,
}

/// Database state beyond the pool.
pub struct Db {
    inner: Rc<DbInner>,
}

struct DbInner {
    config: DbConfig,
    migrations: &'static [Migration],
    migrated: RefCell<Migrated>,
    reader: RefCell<Option<Rc<Reader>>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Migrated {
    Pending,
    Running,
    Done,
    Failed(String),
}

/// The connection reads are pipelined on, and the statements prepared on it.
///
/// Why: bb8-postgres has no statement cache, and a `&str` query is prepared on every call (two
/// round trips); a pooled connection also carries one query at a time. One leased connection
/// shared by every read, with each statement prepared once, carries many queries per round
/// trip. Transactions still take connections of their own from the pool.
struct Reader {
    conn: Leased,
    statements: RefCell<HashMap<&'static str, Statement>>,
}

impl Db {
    /// A database backend that applies `migrations` when it first reaches PostgreSQL.
    pub fn new(config: DbConfig, migrations: &'static [Migration]) -> Self {
        Self {
            inner: Rc::new(DbInner {
                config,
                migrations,
                migrated: RefCell::new(Migrated::Pending),
                reader: RefCell::default(),
            }),
        }
    }
}

impl Backend for Db {
    type Manager = Manager;

    /// Runs the migrations once the database answers (again, after a failed attempt).
    fn on_up(actor: &mut DbActor, ctx: &mut Context<DbActor>) {
        let inner = Rc::clone(&actor.backend.inner);
        if matches!(*inner.migrated.borrow(), Migrated::Running | Migrated::Done) {
            return;
        }
        *inner.migrated.borrow_mut() = Migrated::Running;
        let pool = actor.core.pool.clone();
        let migrations = inner.migrations;
        let run = async move {
            let mut conn = pool.get().await.map_err(|e| describe_run::<Db>(&e))?;
            migrate(&mut conn, migrations)
                .await
                .map_err(|e| e.to_string())
        };
        ctx.spawn(run.into_actor(actor).map(move |outcome, _, _| {
            let state = match outcome {
                Ok(_) => Migrated::Done,
                Err(error) => {
                    log::error!(target: "steward::db", "migrations failed: {error}; retrying on the next check");
                    Migrated::Failed(error)
                }
            };
            *inner.migrated.borrow_mut() = state;
        }));
    }

    fn not_ready(&self) -> Option<String> {
        match &*self.inner.migrated.borrow() {
            Migrated::Done => None,
            Migrated::Failed(error) => Some(format!("migrations failed: {error}")),
            _ => Some("migrations pending".to_owned()),
        }
    }
}

/// Maps a driver error to the store error the HTTP edge understands.
pub fn pg_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        return match db.code().code() {
            // The SQLSTATE first: a transaction's span records which of the two it was.
            code @ ("40001" | "40P01") => {
                StoreError::Contention(format!("{code}: {}", db.message()))
            }
            "23505" => StoreError::Conflict(db.constraint().unwrap_or("unique").to_owned()),
            "23503" | "23514" | "22003" => StoreError::Invalid(db.message().to_owned()),
            // Any other data exception is a value the client sent that the database cannot
            // take (a NUL byte, an impossible date): the client's mistake, told in plain words.
            code if code.starts_with("22") => {
                StoreError::Invalid("a value is not one the database can store".to_owned())
            }
            "57014" => StoreError::Timeout,
            code if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
                StoreError::Unavailable(db.message().to_owned())
            }
            _ => StoreError::Internal(format!("{}: {}", db.code().code(), db.message())),
        };
    }
    if error.is_closed() {
        return StoreError::Unavailable("connection closed".to_owned());
    }
    StoreError::Unavailable(error.to_string())
}

/// A query parameter that can cross threads inside a message.
pub type Param = Box<dyn ToSql + Send + Sync>;

/// Runs one statement (autocommit) on the shared connection, as a prepared statement
/// (prepared once per connection), and returns its rows.
#[derive(Message)]
#[rtype(result = "Result<Vec<Row>, StoreError>")]
pub struct Query {
    /// The `query` label of `db_query_duration_seconds`.
    pub name: &'static str,
    /// The statement, with `$1`-style parameters.
    pub sql: &'static str,
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// When the caller stops waiting: the statement is bounded by the shorter of this and
    /// `query_timeout`, and cancelled on the server when it runs out.
    pub deadline: Deadline,
}

/// The body of a transaction; called again on every retry.
pub type TxWork<T> =
    Box<dyn for<'a> FnMut(&'a Transaction<'a>) -> LocalBoxFuture<'a, Result<T, StoreError>> + Send>;

/// Boxes a closure as a [`TxWork`]; passing the closure through here lets the compiler infer
/// that it works for every transaction lifetime.
pub fn tx_work<T, F>(work: F) -> TxWork<T>
where
    F: for<'a> FnMut(&'a Transaction<'a>) -> LocalBoxFuture<'a, Result<T, StoreError>>
        + Send
        + 'static,
{
    Box::new(work)
}

/// Runs `work` in a transaction at `isolation`, retrying it (with jittered backoff, at most
/// `tx_max_retries` times) when PostgreSQL aborts it for a serialization failure or a
/// deadlock; any other error ends it. The transaction commits when `work` returns `Ok`.
pub struct Transact<T> {
    /// The `query` label of `db_query_duration_seconds`.
    pub name: &'static str,
    /// The isolation level of every attempt.
    pub isolation: IsolationLevel,
    /// The body, run again on a serialization failure or deadlock.
    pub work: TxWork<T>,
    /// When the caller stops waiting: no attempt starts after it, and a running one is
    /// cancelled on the server when it runs out.
    pub deadline: Deadline,
}

impl<T: Send + 'static> Message for Transact<T> {
    type Result = Result<T, StoreError>;
}

#[derive(Clone)]
struct Ops {
    inner: Rc<DbInner>,
    pool: StorePool<Manager>,
    metrics: Arc<Metrics>,
}

impl Ops {
    fn new(actor: &DbActor) -> Self {
        Self {
            inner: Rc::clone(&actor.backend.inner),
            pool: actor.core.pool.clone(),
            metrics: Arc::clone(&actor.core.metrics),
        }
    }

    fn ready(&self) -> Result<(), StoreError> {
        match *self.inner.migrated.borrow() {
            Migrated::Done => Ok(()),
            _ => Err(StoreError::Unavailable(
                "database migrations have not run yet".into(),
            )),
        }
    }

    /// A connection within what remains of `deadline` and `query_timeout`.
    async fn checkout(&self, deadline: Deadline) -> Result<Leased, StoreError> {
        let (wait, callers) = deadline.bound(self.inner.config.query_timeout)?;
        match self.pool.checkout(wait).await {
            Err(StoreError::PoolTimeout) if callers => Err(StoreError::DeadlineExceeded),
            leased => leased,
        }
    }

    /// Whether the shared reader connection can still be used: open, and not from before the
    /// last fault the breaker saw (then it goes back to the pool, which checks it).
    fn usable(&self, reader: &Reader) -> bool {
        !reader.conn.is_closed() && !reader.conn.stale(self.pool.breaker())
    }

    async fn reader(&self, deadline: Deadline) -> Result<Rc<Reader>, StoreError> {
        if let Some(reader) = self.inner.reader.borrow().as_ref() {
            if self.usable(reader) {
                return Ok(Rc::clone(reader));
            }
        }
        let reader = Rc::new(Reader {
            conn: self.checkout(deadline).await?,
            statements: RefCell::default(),
        });
        let mut slot = self.inner.reader.borrow_mut();
        match slot.as_ref() {
            Some(current) if self.usable(current) => Ok(Rc::clone(current)),
            _ => {
                *slot = Some(Rc::clone(&reader));
                Ok(reader)
            }
        }
    }

    fn observe(&self, name: &str, started: Instant) {
        self.metrics
            .db_query_duration_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn query(&self, query: Query) -> Result<Vec<Row>, StoreError> {
        self.ready()?;
        query.deadline.bound(self.inner.config.query_timeout)?;
        let name = query.name;
        let span = statement_span(name, 0);
        let started = Instant::now();
        let outcome = self.pool.breaker().call(self.run_query(query)).await;
        self.observe(name, started);
        span.record(&outcome);
        outcome
    }

    async fn run_query(&self, query: Query) -> Result<Vec<Row>, StoreError> {
        let reader = self.reader(query.deadline).await?;
        let client = &**reader.conn;
        let run = async {
            let cached = reader.statements.borrow().get(query.sql).cloned();
            let statement = match cached {
                Some(statement) => statement,
                None => {
                    let statement = client.prepare(query.sql).await?;
                    reader
                        .statements
                        .borrow_mut()
                        .insert(query.sql, statement.clone());
                    statement
                }
            };
            let params: Vec<&(dyn ToSql + Sync)> =
                query.params.iter().map(|p| p.as_ref() as _).collect();
            client.query(&statement, &params).await
        };
        let outcome = query
            .deadline
            .run(self.inner.config.query_timeout, async {
                run.await.map_err(pg_error)
            })
            .await;
        if matches!(
            outcome,
            Err(StoreError::Timeout | StoreError::DeadlineExceeded)
        ) {
            // Stop the work on the server too; the connection stays usable.
            cancel(client);
        }
        outcome
    }

    async fn transact<T>(&self, tx: Transact<T>) -> Result<T, StoreError> {
        self.ready()?;
        tx.deadline.bound(self.inner.config.query_timeout)?;
        self.pool.breaker().call(self.run_transaction(tx)).await
    }

    async fn run_transaction<T>(&self, mut tx: Transact<T>) -> Result<T, StoreError> {
        let config = self.inner.config;
        let mut attempt = 0;
        loop {
            let span = statement_span(tx.name, attempt + 1);
            let started = Instant::now();
            let outcome = async {
                let mut conn = self.checkout(tx.deadline).await?;
                let run = async {
                    let transaction = conn
                        .build_transaction()
                        .isolation_level(tx.isolation)
                        .start()
                        .await
                        .map_err(pg_error)?;
                    let value = (tx.work)(&transaction).await?;
                    transaction.commit().await.map_err(pg_error)?;
                    Ok(value)
                };
                let outcome = tx.deadline.run(config.query_timeout, run).await;
                if matches!(
                    outcome,
                    Err(StoreError::Timeout | StoreError::DeadlineExceeded)
                ) {
                    // The dropped transaction rolls back once the running statement stops:
                    // cancel it rather than let it run to statement_timeout, and retire the
                    // connection, whose state the cancel may have caught mid-way.
                    cancel(&conn);
                    conn.mark_broken();
                }
                outcome
            }
            .await;
            self.observe(tx.name, started);
            span.record(&outcome);
            if let Err(StoreError::Contention(why)) = &outcome {
                span.set_attribute(KeyValue::new(
                    "db.response.status_code",
                    why.get(..5).unwrap_or_default().to_owned(),
                ));
            }
            drop(span);
            match outcome {
                Err(StoreError::Contention(why)) if attempt < config.tx_max_retries => {
                    self.metrics.db_tx_retries_total.inc();
                    log::debug!(target: "steward::db", "{} retried after: {why}", tx.name);
                    let pause = config.tx_backoff.delay(attempt);
                    // No attempt starts that could not finish before the caller's deadline.
                    if tx.deadline.remaining().is_some_and(|left| left <= pause) {
                        return Err(StoreError::DeadlineExceeded);
                    }
                    actix_rt::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The span of a statement or of one attempt of a transaction (`attempt` from 1; 0 for a
/// statement): named after it, never its text, which may carry data.
fn statement_span(name: &'static str, attempt: u32) -> Span {
    Span::client(name, || {
        let mut attributes = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", name),
        ];
        if attempt > 0 {
            attributes.push(KeyValue::new("steward.db.attempt", i64::from(attempt)));
        }
        attributes
    })
}

/// Asks the server to stop the statement running on `client` (a query past its deadline).
fn cancel(client: &tokio_postgres::Client) {
    let token = client.cancel_token();
    actix_rt::spawn(async move {
        let _ = token.cancel_query(NoTls).await;
    });
}

impl Handler<Query> for DbActor {
    type Result = ResponseFuture<Result<Vec<Row>, StoreError>>;

    fn handle(&mut self, msg: Query, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.query(msg).await })
    }
}

impl<T: Send + 'static> Handler<Transact<T>> for DbActor {
    type Result = ResponseFuture<Result<T, StoreError>>;

    fn handle(&mut self, msg: Transact<T>, _: &mut Self::Context) -> Self::Result {
        let ops = Ops::new(self);
        Box::pin(async move { ops.transact(msg).await })
    }
}

crate::traced_messages!(DbActor: Query);

impl<T: Send + 'static> Handler<Traced<Transact<T>>> for DbActor {
    type Result = ResponseFuture<Result<T, StoreError>>;

    fn handle(&mut self, msg: Traced<Transact<T>>, ctx: &mut Self::Context) -> Self::Result {
        let (name, wait) = self.mailbox();
        handle_traced(self, name, &wait, msg, ctx)
    }
}
