//! `/v1/accounts`: the ledger's accounts, read through the cache.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::FutureExt;
use serde::Deserialize;
use steward::actors::cache::{GetOrLoad, Loader};
use steward::actors::StoreError;
use utoipa::ToSchema;

use steward::http::error::ErrorEnvelope;
use steward::ApiError;

use crate::config::AccountsConfig;
use crate::errors;
use crate::ledger::{self, Account, Ledger, Transfer, Viewer};
use crate::openapi::AccountId;
use steward::http::pagination::{encode, Page, PageQuery};
use steward::{Context, Principal, RequestDeadline};

use super::viewer;
use steward::trace::Call;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Whole units.
    #[schema(minimum = 0)]
    initial_balance: i64,
}

/// The cache key of an account; deleted whenever its balance changes.
pub fn cache_key(id: i64) -> String {
    format!("account:{id}")
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        errors::ACCOUNT_NOT_FOUND,
        format!("account {id} does not exist"),
    )
}

/// `POST /v1/accounts`: 201 with the account and its Location.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    request_body = NewAccount,
    responses(
        (status = 201, description = "Opened", body = Account,
            headers(("Location" = String, description = "/v1/accounts/{id}"))),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
        (status = 422, description = "Well-formed JSON with invalid values", body = ErrorEnvelope),
    )
)]
pub async fn create(
    ctx: Context,
    principal: Principal,
    deadline: RequestDeadline,
    body: web::Json<NewAccount>,
) -> Result<HttpResponse, ApiError> {
    let NewAccount {
        name,
        initial_balance,
    } = body.into_inner();
    // PostgreSQL text cannot hold NUL; everything else is stored as data.
    if !(1..=100).contains(&name.chars().count()) || name.contains('\0') {
        return Err(errors::INVALID_NAME.into());
    }
    if initial_balance < 0 {
        return Err(errors::INVALID_BALANCE.into());
    }
    let ledger = Ledger::new(&ctx, *deadline)?;
    let account = ledger::create_account(&ledger, principal.id(), name, initial_balance).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/accounts/{}", account.id)))
        .json(account))
}

/// The account as the JSON the API answers with; `None` when it does not exist.
async fn load(db: &Ledger, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    let account = ledger::account(db, id).await?;
    account
        .map(|a| serde_json::to_vec(&a).map_err(|e| StoreError::Internal(e.to_string())))
        .transpose()
}

/// `GET /v1/accounts/{id}`: cache-aside through the cache actor, straight from the database
/// when the request says `Cache-Control: no-cache` or the cache actor is restarting.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    params(AccountId),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 404, description = "No such account", body = ErrorEnvelope),
    )
)]
pub async fn get(
    ctx: Context,
    principal: Principal,
    id: web::Path<i64>,
    deadline: RequestDeadline,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let db = Ledger::new(&ctx, *deadline)?;
    let bypass = req
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        });
    let cached = match ctx.cache().ok().filter(|_| !bypass) {
        Some(cache) => {
            let loader_db = db.clone();
            let loader: Loader =
                Box::new(move || async move { load(&loader_db, id).await }.boxed());
            let ttl = ctx.config::<AccountsConfig>().cache_ttl;
            cache
                .call(GetOrLoad {
                    key: cache_key(id),
                    ttl,
                    loader,
                    deadline: *deadline,
                })
                .await
                .ok()
        }
        None => None,
    };
    let body = match cached {
        Some(result) => result?,
        None => load(&db, id).await?,
    };
    // Another principal's account does not exist as far as this one can tell.
    let visible = |body: &[u8]| match viewer(&principal) {
        Viewer::All => true,
        viewer => serde_json::from_slice::<Account>(body).is_ok_and(|a| viewer.sees(&a.owner)),
    };
    match body {
        Some(body) if visible(&body) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(body)),
        _ => Err(not_found(id)),
    }
}

/// `GET /v1/accounts?limit=&cursor=`: accounts in id order.
#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "accounts",
    params(PageQuery),
    responses((status = 200, description = "Accounts by id", body = Page<Account>))
)]
pub async fn list(
    ctx: Context,
    principal: Principal,
    deadline: RequestDeadline,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.parse()?;
    let ledger = Ledger::new(&ctx, *deadline)?;
    let after = page.after.unwrap_or(0);
    let found = ledger::accounts(&ledger, viewer(&principal), after, page.limit).await?;
    Ok(HttpResponse::Ok().json(Page::keyset(found, page.limit as usize, |a| encode(a.id))))
}

/// `GET /v1/accounts/{id}/transfers?limit=&cursor=`: the account's transfers, newest first.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/transfers",
    tag = "accounts",
    params(AccountId, PageQuery),
    responses(
        (status = 200, description = "The account's transfers, newest first", body = Page<Transfer>),
        (status = 404, description = "No such account", body = ErrorEnvelope),
    )
)]
pub async fn transfers(
    ctx: Context,
    principal: Principal,
    id: web::Path<i64>,
    deadline: RequestDeadline,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let page = query.parse()?;
    let before = page.after.unwrap_or(i64::MAX);
    let ledger = Ledger::new(&ctx, *deadline)?;
    let found = ledger::transfers_of(&ledger, viewer(&principal), id, before, page.limit)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(Page::keyset(found, page.limit as usize, |t| encode(t.id))))
}
