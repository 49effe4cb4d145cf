//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations and the
//! types they answer with, served at `GET /openapi.json`.
//!
//! Each handler lists its success and its own refusals (404, 409, 422, ...). What the edge can
//! answer on any route (a malformed request, the body and head limits, rate limits, a store
//! outage) is added to every operation by [`EdgeResponses`], so the document cannot forget a
//! status a route can really return. CI runs schemathesis against it (`.ci/api-check`).

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi};

use super::{accounts, admin, health, jobs, kv, locks, meta, transfers};

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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "steward",
        description = "The reference REST service of the steward actor framework. Every error is `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
    ),
    paths(
        health::live,
        health::ready,
        meta::version,
        meta::metrics,
        admin::actors,
        admin::set_log_level,
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
    ),
    modifiers(&EdgeResponses, &AdminToken),
)]
struct ApiDoc;

/// Statuses the edge may answer on any route, with why.
const EDGE: [(&str, &str); 8] = [
    (
        "400",
        "Malformed request: path, query, header or JSON syntax",
    ),
    ("404", "No such route, or no such resource"),
    ("408", "The body did not arrive within server.body_timeout"),
    ("413", "The body is larger than the configured limit"),
    (
        "429",
        "Rate limited (Retry-After, RateLimit-Policy, RateLimit)",
    ),
    (
        "431",
        "The request head is larger than server.max_head_size",
    ),
    (
        "503",
        "A store is unavailable or the instance is shutting down (Retry-After)",
    ),
    ("504", "A store did not answer in time (Retry-After)"),
];

/// Adds the [`EDGE`] responses, as error envelopes, to every operation that does not list
/// them itself.
struct EdgeResponses;

impl Modify for EdgeResponses {
    fn modify(&self, openapi: &mut Document) {
        let envelope = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ] {
                let Some(operation) = operation else { continue };
                for (status, why) in EDGE {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(why)
                                .content("application/json", envelope.clone())
                                .into()
                        });
                }
            }
        }
    }
}

/// The bearer token of `/admin/*`.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// `GET /openapi.json`: the OpenAPI 3 document of this API.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}
