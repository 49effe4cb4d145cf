//! The reference API's part of the OpenAPI document: its paths and the parameters they share.
//! steward merges it with its own routes (health, version, metrics, admin), adds the edge's
//! statuses to every operation and lists every error code.

use utoipa::{IntoParams, OpenApi};

use crate::http::{accounts, jobs, kv, locks, transfers};

/// `{key}` of the kv routes: 1-200 characters of `[A-Za-z0-9._:-]`.
#[derive(IntoParams)]
#[into_params(names("key"), parameter_in = Path)]
#[allow(dead_code)] // a parameter's schema: utoipa reads it, no handler builds it
pub struct Key(#[param(pattern = r"^[A-Za-z0-9._:-]{1,200}$")] String);

/// `{name}` of the lock routes: the same alphabet as kv keys.
#[derive(IntoParams)]
#[into_params(names("name"), parameter_in = Path)]
#[allow(dead_code)] // a parameter's schema: utoipa reads it, no handler builds it
pub struct LockName(#[param(pattern = r"^[A-Za-z0-9._:-]{1,200}$")] String);

/// `{id}` of the job routes: 32 hex digits, as `POST /v1/jobs` returned it.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)] // a parameter's schema: utoipa reads it, no handler builds it
pub struct JobId(#[param(pattern = "^[0-9a-f]{32}$")] String);

/// `{id}` of the account routes.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)] // a parameter's schema: utoipa reads it, no handler builds it
pub struct AccountId(i64);

/// The reference API's paths, for `Service::openapi`.
#[derive(OpenApi)]
#[openapi(paths(
    kv::get,
    kv::put,
    kv::delete,
    accounts::list,
    accounts::create,
    accounts::get,
    accounts::transfers,
    transfers::create,
    locks::acquire,
    locks::extend,
    locks::release,
    locks::inspect,
    jobs::create,
    jobs::get,
    jobs::dead,
    jobs::retry,
))]
pub struct ApiDoc;
