//! The OpenAPI 3 document of a service, served at `GET /openapi.json`: steward's own routes
//! (health, version, metrics, admin) from their annotations, merged with the paths and schemas
//! the service hands to `Service::openapi`.
//!
//! Each handler lists its success and its own refusals (404, 409, 422, ...). What the edge can
//! answer on any route (a malformed request, the body and head limits, rate limits, a store
//! outage) is added to every operation by [`EdgeResponses`], so the document cannot forget a
//! status a route can really return; every error code (steward's and the service's) is listed
//! under `x-error-codes` of the error envelope's schema.

use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::auth::admin as auth_admin;
use crate::auth::is_public;
use crate::http::error::{codes, ErrorCode};
use crate::http::{admin, health, meta};

#[derive(OpenApi)]
#[openapi(
    paths(
        health::live,
        health::ready,
        meta::version,
        meta::metrics,
        admin::actors,
        admin::set_log_level,
        auth_admin::issue,
        auth_admin::list,
        auth_admin::revoke,
    ),
    components(schemas(crate::http::error::ErrorEnvelope))
)]
struct StewardDoc;

/// The whole document of a service, as JSON.
pub(crate) fn document(
    name: &str,
    version: &str,
    about: &str,
    service: Option<Document>,
    errors: &[ErrorCode],
    public: &[String],
) -> String {
    let mut document = StewardDoc::openapi();
    if let Some(service) = service {
        document.merge(service);
    }
    document.info.title = name.to_owned();
    document.info.version = version.to_owned();
    let envelope = "Every error is `{\"error\": {\"code\", \"message\", \"request_id\"}}`; `x-error-codes` on the ErrorEnvelope schema lists every code.";
    document.info.description = Some(match about {
        "" => envelope.to_owned(),
        about => format!("{about} {envelope}"),
    });
    EdgeResponses.modify(&mut document);
    AdminToken.modify(&mut document);
    ServiceAuth { public }.modify(&mut document);
    list_codes(&mut document, errors);
    document.to_json().expect("the OpenAPI document serializes")
}

/// Puts every error code, steward's then the service's, on the envelope's schema as
/// `x-error-codes: [{code, status, description}]` (a list: one name may be declared with two
/// statuses, as the reference's `invalid_ttl` is for a query and for a body).
fn list_codes(document: &mut Document, errors: &[ErrorCode]) {
    let listed: Vec<serde_json::Value> = codes::ALL
        .iter()
        .chain(errors)
        .map(|code| {
            serde_json::json!({
                "code": code.code,
                "status": code.status,
                "description": code.description,
            })
        })
        .collect();
    let Some(components) = document.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(envelope))) =
        components.schemas.get_mut("ErrorEnvelope")
    {
        let extensions = ExtensionsBuilder::new()
            .add("x-error-codes", serde_json::Value::Array(listed))
            .build();
        envelope
            .extensions
            .get_or_insert_with(Default::default)
            .merge(extensions);
    }
}

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

/// Calls `change` with the path and each operation of the document.
fn each_operation(openapi: &mut Document, mut change: impl FnMut(&str, &mut Operation)) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            change(path, operation);
        }
    }
}

/// Adds a `status` answered with the error envelope, for `why`, unless the operation lists it.
fn add_error(operation: &mut Operation, status: &str, why: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            let envelope = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build();
            ResponseBuilder::new()
                .description(why)
                .content("application/json", envelope)
                .into()
        });
}

/// Adds the [`EDGE`] responses, as error envelopes, to every operation that does not list
/// them itself.
struct EdgeResponses;

impl Modify for EdgeResponses {
    fn modify(&self, openapi: &mut Document) {
        each_operation(openapi, |_, operation| {
            for (status, why) in EDGE {
                add_error(operation, status, why);
            }
        });
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

/// The service's own operations need an API key or a bearer token (as `[auth]` turns them on),
/// and may answer 401 for it; public prefixes and steward's own routes need neither.
struct ServiceAuth<'a> {
    public: &'a [String],
}

impl Modify for ServiceAuth<'_> {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "bearer_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        each_operation(openapi, |path, operation| {
            if is_public(path, self.public) {
                operation
                    .security
                    .get_or_insert_with(|| vec![SecurityRequirement::default()]);
                return;
            }
            operation.security = Some(vec![
                SecurityRequirement::new("api_key", Vec::<String>::new()),
                SecurityRequirement::new("bearer_jwt", Vec::<String>::new()),
            ]);
            // 403 is the handler's to declare: only it knows which scopes it needs.
            let why = "No credentials, or credentials that do not verify (WWW-Authenticate)";
            add_error(operation, "401", why);
        });
    }
}
