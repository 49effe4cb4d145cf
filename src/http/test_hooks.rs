//! Routes that exist only in builds with the `test-hooks` feature: the process tests use them
//! to hold a request in flight and to crash a store actor inside a running service.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use steward_actors::db::{pg_error, tx_work, Transact};
use steward_actors::store::Crash;
use tokio_postgres::IsolationLevel;

use super::deadline::RequestDeadline;
use super::error::{codes, ApiError};
use crate::context::Context;
use crate::trace::Call;

#[derive(Deserialize)]
pub struct Slow {
    ms: u64,
}

/// `GET /test/slow?ms=N`: answers 200 after N milliseconds (at most one minute).
pub async fn slow(query: web::Query<Slow>) -> HttpResponse {
    let ms = query.ms.min(60_000);
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().json(json!({ "slept_ms": ms }))
}

/// `GET /test/db-sleep?ms=N`: a database statement that runs N milliseconds on the shared
/// reader connection, to check that the query deadline (the store's, or the request's) answers
/// in time and stops the statement on the server.
pub async fn db_sleep(
    query: web::Query<Slow>,
    ctx: Context,
    deadline: RequestDeadline,
) -> Result<HttpResponse, ApiError> {
    let sleep = steward_actors::db::Query {
        name: "test_sleep",
        sql: "SELECT pg_sleep($1)",
        params: vec![Box::new(query.ms as f64 / 1000.0)],
        deadline: *deadline,
    };
    ctx.db()?.call(sleep).await??;
    Ok(HttpResponse::Ok().json(json!({ "slept_ms": query.ms })))
}

/// `GET /test/db-hold?ms=N`: holds a pooled database connection of its own for N
/// milliseconds (a transaction around `pg_sleep`): a route of fixed cost whose capacity is the
/// pool's size, for the overload benchmark.
pub async fn db_hold(
    query: web::Query<Slow>,
    ctx: Context,
    deadline: RequestDeadline,
) -> Result<HttpResponse, ApiError> {
    let seconds = query.ms.min(60_000) as f64 / 1000.0;
    let hold = Transact {
        name: "test_hold",
        isolation: IsolationLevel::ReadCommitted,
        work: tx_work(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_sleep($1)", &[&seconds])
                    .await
                    .map_err(pg_error)?;
                Ok(())
            })
        }),
        deadline: *deadline,
    };
    ctx.db()?.call(hold).await??;
    Ok(HttpResponse::Ok().json(json!({ "held_ms": query.ms })))
}

/// `POST /test/crash/{store}`: makes the named store actor panic.
pub async fn crash(store: web::Path<String>, ctx: Context) -> Result<HttpResponse, ApiError> {
    let sent = match store.as_str() {
        "redis" => ctx.stores().cache.get().map(|addr| addr.do_send(Crash)),
        "postgres" => ctx.stores().db.get().map(|addr| addr.do_send(Crash)),
        _ => return Err(ApiError::new(codes::NOT_FOUND, "no such store")),
    };
    match sent {
        Some(()) => Ok(HttpResponse::Accepted().finish()),
        None => Err(ApiError::new(codes::UNAVAILABLE, "store not started").retry_after(1)),
    }
}
