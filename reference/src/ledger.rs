//! The reference API's ledger: accounts and transfers in PostgreSQL, through the database
//! actor. Money is an integer of minor units (`i64`); balances never go negative.

use actix::Addr;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use steward::actors::db::{pg_error, tx_work, DbActor, Param, Query, Transact};
use steward::actors::StoreError;
use steward::trace::Call;
use steward::{Context, Deadline, ErrorCode};
use tokio_postgres::types::Type;
use tokio_postgres::{IsolationLevel, Row, Transaction};

use crate::errors;

/// The database actor and the deadline of the request (or job) the ledger works for: every
/// statement it sends carries the deadline.
#[derive(Clone)]
pub struct Ledger {
    actor: Addr<DbActor>,
    deadline: Deadline,
}

impl Ledger {
    /// The ledger of the service's database, working within `deadline`.
    pub fn new(ctx: &Context, deadline: Deadline) -> Result<Self, StoreError> {
        Ok(Self {
            actor: ctx.db()?,
            deadline,
        })
    }
}

/// An account of the reference ledger, as the API shows (and the cache keeps) it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Account {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// 1-100 characters, any but NUL.
    pub name: String,
    /// Minor units; never negative.
    pub balance: i64,
    /// The balance the account was opened with.
    pub initial_balance: i64,
    /// RFC 3339.
    pub created_at: String,
    /// The principal that opened it (`key:<name>`, `jwt:<sub>` or `anonymous`): only it sees
    /// and debits the account (and a principal with the `ledger:admin` scope sees it).
    pub owner: String,
}

impl Account {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            name: row.get(1),
            balance: row.get(2),
            initial_balance: row.get(3),
            created_at: row.get(4),
            owner: row.get(5),
        }
    }
}

/// Whose accounts a read covers.
#[derive(Clone, Copy, Debug)]
pub enum Viewer<'a> {
    /// Only this principal's.
    Owner(&'a str),
    /// Everyone's (the `ledger:admin` scope).
    All,
}

impl Viewer<'_> {
    /// Whether the viewer may see an account owned by `owner`.
    pub fn sees(&self, owner: &str) -> bool {
        match self {
            Viewer::Owner(me) => *me == owner,
            Viewer::All => true,
        }
    }
}

/// Money moved from one account to another, once.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Transfer {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// The account debited.
    pub from: i64,
    /// The account credited.
    pub to: i64,
    /// Minor units, positive.
    pub amount: i64,
    /// RFC 3339.
    pub created_at: String,
}

impl Transfer {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            from: row.get(1),
            to: row.get(2),
            amount: row.get(3),
            created_at: row.get(4),
        }
    }
}

async fn query(
    db: &Ledger,
    name: &'static str,
    sql: &'static str,
    params: Vec<Param>,
) -> Result<Vec<Row>, StoreError> {
    let deadline = db.deadline;
    db.actor
        .call(Query {
            name,
            sql,
            params,
            deadline,
        })
        .await?
}

/// Opens an account for `owner` with `initial_balance` as its balance.
pub async fn create_account(
    db: &Ledger,
    owner: &str,
    name: String,
    initial_balance: i64,
) -> Result<Account, StoreError> {
    let rows = query(
        db,
        "account_create",
        sql::CREATE_ACCOUNT,
        vec![
            Box::new(name),
            Box::new(initial_balance),
            Box::new(owner.to_owned()),
        ],
    )
    .await?;
    rows.first()
        .map(Account::from_row)
        .ok_or_else(|| StoreError::Internal("INSERT returned no row".into()))
}

/// The account `id`, read from PostgreSQL; `None` when there is none.
pub async fn account(db: &Ledger, id: i64) -> Result<Option<Account>, StoreError> {
    let rows = query(db, "account_by_id", sql::ACCOUNT_BY_ID, vec![Box::new(id)]).await?;
    Ok(rows.first().map(Account::from_row))
}

/// The accounts `viewer` sees, in id order after id `after`: `limit` of them, and one more
/// when there are more (which tells the caller a next page exists).
pub async fn accounts(
    db: &Ledger,
    viewer: Viewer<'_>,
    after: i64,
    limit: i64,
) -> Result<Vec<Account>, StoreError> {
    let rows = match viewer {
        Viewer::All => {
            let params: Vec<Param> = vec![Box::new(after), Box::new(limit + 1)];
            query(db, "account_list", sql::ACCOUNT_LIST, params).await?
        }
        Viewer::Owner(owner) => {
            let params: Vec<Param> = vec![
                Box::new(owner.to_owned()),
                Box::new(after),
                Box::new(limit + 1),
            ];
            query(db, "account_list_owned", sql::ACCOUNT_LIST_OWNED, params).await?
        }
    };
    Ok(rows.iter().map(Account::from_row).collect())
}

/// An account's transfers (either direction), newest first, before id `before`: `limit` of
/// them and one more when there are more; `None` when the account does not exist or
/// `viewer` does not see it.
pub async fn transfers_of(
    db: &Ledger,
    viewer: Viewer<'_>,
    account_id: i64,
    before: i64,
    limit: i64,
) -> Result<Option<Vec<Transfer>>, StoreError> {
    let visible = account(db, account_id).await?;
    if !visible.is_some_and(|a| viewer.sees(&a.owner)) {
        return Ok(None);
    }
    let params: Vec<Param> = vec![Box::new(account_id), Box::new(before), Box::new(limit + 1)];
    let rows = query(db, "account_transfers", sql::TRANSFERS_OF, params).await?;
    Ok(Some(rows.iter().map(Transfer::from_row).collect()))
}

/// What a transfer request asked for.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The account debited.
    pub from: i64,
    /// Another account than `from`.
    pub to: i64,
    /// Minor units.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// The principal asking: `from` must be its account. Not part of the body.
    #[serde(skip)]
    #[schema(ignore)]
    pub debitor: String,
}

impl TransferRequest {
    /// Identifies the request for idempotency: the same key must come with the same request.
    fn fingerprint(&self) -> String {
        format!("{}:{}:{}", self.from, self.to, self.amount)
    }
}

/// The answer to a transfer, as first given and as replayed for its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferAnswer {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The transfer for 201; `{"code", "message"}` for an error.
    pub body: serde_json::Value,
    /// Whether this is the stored answer of an earlier request with the same key.
    pub replayed: bool,
}

/// Why a transfer was not even answered.
#[derive(Debug)]
pub enum TransferRefusal {
    /// The idempotency key was used before with a different request.
    KeyReused,
    /// The store failed; nothing was decided.
    Store(StoreError),
}

/// Moves `amount` from one account to the other in one SERIALIZABLE transaction that also
/// records the transfer and the idempotency key with its answer. A key seen before with the
/// same request returns the stored answer and moves nothing.
///
/// The stored answer is looked up before the transaction, not inside it: under SERIALIZABLE a
/// read of the key index takes predicate locks on its pages, and every concurrent transfer
/// inserting a key into those pages then conflicts with it. Measured at 64 connections, that
/// made most transfers fail serialization and retry. Two requests racing with one key both
/// miss the lookup; the second one's insert of the key fails, its transaction rolls back, and
/// it replays the first one's answer.
pub async fn transfer(
    db: &Ledger,
    key: String,
    request: TransferRequest,
) -> Result<TransferAnswer, TransferRefusal> {
    if let Some(answer) = stored_answer(db, &key, &request).await? {
        return Ok(answer);
    }
    let (tx_key, tx_request) = (key.clone(), request.clone());
    let work = tx_work(move |tx| {
        let (key, request) = (tx_key.clone(), tx_request.clone());
        async move { transfer_in(tx, &key, request).await }.boxed_local()
    });
    let outcome = db
        .actor
        .call(Transact {
            name: "transfer",
            isolation: IsolationLevel::Serializable,
            work,
            deadline: db.deadline,
        })
        .await
        .map_err(|e| TransferRefusal::Store(e.into()))?;
    match outcome {
        Ok((status, body)) => Ok(TransferAnswer {
            status,
            body,
            replayed: false,
        }),
        Err(StoreError::Conflict(constraint)) if constraint == "idempotency_keys_pkey" => {
            stored_answer(db, &key, &request).await?.ok_or_else(|| {
                TransferRefusal::Store(StoreError::Internal("idempotency key vanished".into()))
            })
        }
        Err(error) => Err(TransferRefusal::Store(error)),
    }
}

/// The answer stored for `key`, if any; a key stored for another request is refused.
async fn stored_answer(
    db: &Ledger,
    key: &str,
    request: &TransferRequest,
) -> Result<Option<TransferAnswer>, TransferRefusal> {
    let rows = query(
        db,
        "idempotency_lookup",
        sql::IDEMPOTENCY_LOOKUP,
        vec![Box::new(key.to_owned())],
    )
    .await
    .map_err(TransferRefusal::Store)?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    if row.get::<_, &str>(0) != request.fingerprint() {
        return Err(TransferRefusal::KeyReused);
    }
    let status: i16 = row.get(1);
    let body = serde_json::from_str(row.get(2))
        .map_err(|e| TransferRefusal::Store(StoreError::Internal(e.to_string())))?;
    Ok(Some(TransferAnswer {
        status: status as u16,
        body,
        replayed: true,
    }))
}

impl From<StoreError> for TransferRefusal {
    fn from(error: StoreError) -> Self {
        TransferRefusal::Store(error)
    }
}

/// The transaction's body: the answer (moved or refused) with the key recorded. A key that
/// another transaction recorded first fails the insert with a unique violation.
async fn transfer_in(
    tx: &Transaction<'_>,
    key: &str,
    request: TransferRequest,
) -> Result<(u16, serde_json::Value), StoreError> {
    let fingerprint = request.fingerprint();
    let (status, body) = move_money(tx, request).await?;
    tx.execute_typed(
        "INSERT INTO idempotency_keys (key, fingerprint, status, response) VALUES ($1, $2, $3, $4::text::jsonb)",
        &[
            (&key, Type::TEXT),
            (&fingerprint, Type::TEXT),
            (&(status as i16), Type::INT2),
            (&body.to_string(), Type::TEXT),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok((status, body))
}

/// Locks both accounts (in id order, so opposite transfers cannot deadlock), checks, moves.
/// An account of another principal is debited as little as a missing one: "does not exist".
async fn move_money(
    tx: &Transaction<'_>,
    request: TransferRequest,
) -> Result<(u16, serde_json::Value), StoreError> {
    let ids = vec![request.from, request.to];
    let rows = tx
        .query_typed(
            "SELECT id, balance, owner FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[(&ids, Type::INT8_ARRAY)],
        )
        .await
        .map_err(pg_error)?;
    let balance = |id: i64| {
        rows.iter()
            .find(|r| r.get::<_, i64>(0) == id)
            .filter(|r| id != request.from || r.get::<_, &str>(2) == request.debitor)
            .map(|r| r.get::<_, i64>(1))
    };
    let refused = |code: ErrorCode, message: String| {
        Ok((code.status, json!({"code": code.code, "message": message})))
    };
    let (Some(from_balance), Some(to_balance)) = (balance(request.from), balance(request.to))
    else {
        let missing = if balance(request.from).is_none() {
            request.from
        } else {
            request.to
        };
        return refused(
            errors::ACCOUNT_NOT_FOUND,
            format!("account {missing} does not exist"),
        );
    };
    if from_balance < request.amount {
        return refused(
            errors::INSUFFICIENT_FUNDS,
            format!(
                "account {} holds less than {}",
                request.from, request.amount
            ),
        );
    }
    if to_balance.checked_add(request.amount).is_none() {
        return refused(
            errors::AMOUNT_OVERFLOW,
            format!("account {} cannot hold that much", request.to),
        );
    }
    for (id, delta) in [
        (request.from, -request.amount),
        (request.to, request.amount),
    ] {
        tx.execute_typed(
            "UPDATE accounts SET balance = balance + $2, updated_at = now() WHERE id = $1",
            &[(&id, Type::INT8), (&delta, Type::INT8)],
        )
        .await
        .map_err(pg_error)?;
    }
    let row = tx
        .query_typed_one(
            sql::INSERT_TRANSFER,
            &[
                (&request.from, Type::INT8),
                (&request.to, Type::INT8),
                (&request.amount, Type::INT8),
            ],
        )
        .await
        .map_err(pg_error)?;
    let transfer = Transfer::from_row(&row);
    let body = serde_json::to_value(&transfer).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((201, body))
}

/// The statements, with the shared column lists spelled out once. Timestamps leave PostgreSQL
/// as RFC 3339 text in UTC.
mod sql {
    macro_rules! created_at {
        () => {
            r#"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#
        };
    }
    macro_rules! account_columns {
        () => {
            concat!(
                "id, name, balance, initial_balance, ",
                created_at!(),
                ", owner"
            )
        };
    }
    macro_rules! transfer_columns {
        () => {
            concat!("id, from_account, to_account, amount, ", created_at!())
        };
    }

    pub const CREATE_ACCOUNT: &str = concat!(
        "INSERT INTO accounts (name, initial_balance, balance, owner) VALUES ($1, $2, $2, $3) RETURNING ",
        account_columns!()
    );
    pub const ACCOUNT_BY_ID: &str = concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = $1"
    );
    pub const ACCOUNT_LIST: &str = concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id > $1 ORDER BY id LIMIT $2"
    );
    pub const ACCOUNT_LIST_OWNED: &str = concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    pub const TRANSFERS_OF: &str = concat!(
        "SELECT ",
        transfer_columns!(),
        " FROM transfers WHERE (from_account = $1 OR to_account = $1) AND id < $2 ORDER BY id DESC LIMIT $3"
    );
    pub const IDEMPOTENCY_LOOKUP: &str =
        "SELECT fingerprint, status, response::text FROM idempotency_keys WHERE key = $1";
    pub const INSERT_TRANSFER: &str = concat!(
        "INSERT INTO transfers (from_account, to_account, amount) VALUES ($1, $2, $3) RETURNING ",
        transfer_columns!()
    );
}
