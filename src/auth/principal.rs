//! The principal: who a request (or a job) acts for.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::http::error::{codes, ApiError};

/// Who a request acts for, as the edge authenticated it: handlers take it as an argument
/// (`principal: Principal`), jobs get its [`id`](Self::id) in `JobContext::principal`, and
/// the access log and the rate limiter name it.
///
/// Ids are namespaced by how the caller proved who it is, so no scheme can claim another's
/// principal: `key:<name>` for an API key (every key issued under one name is one principal,
/// which is how keys are rotated without the caller losing what it owns), `jwt:<sub>` for a
/// bearer token, and `anonymous` for a caller without credentials on a service that does not
/// require them.
///
/// On such an open service (`auth.required = false`: development, or behind a gateway that
/// authenticates) the anonymous principal holds every scope, so the service behaves as it
/// would without authentication. On a route a service made public, and on steward's own
/// routes, the principal is anonymous with no scope.
#[derive(Clone, Debug)]
pub struct Principal {
    id: Arc<str>,
    scheme: Scheme,
    key_id: Option<Arc<str>>,
    scopes: Scopes,
}

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `X-Api-Key`.
    ApiKey,
    /// `Authorization: Bearer <JWT>`.
    Jwt,
    /// No credentials.
    Anonymous,
}

/// The scopes a principal holds.
#[derive(Clone, Debug)]
enum Scopes {
    Listed(Arc<[String]>),
    /// The anonymous principal of an open service.
    All,
}

impl Principal {
    /// The principal of an API key issued under `name`; `key_id` names the key in logs.
    pub(crate) fn api_key(name: &str, key_id: &str, scopes: Vec<String>) -> Self {
        Self {
            id: format!("key:{name}").into(),
            scheme: Scheme::ApiKey,
            key_id: Some(key_id.into()),
            scopes: Scopes::Listed(scopes.into()),
        }
    }

    /// The principal of a bearer token's `sub`.
    pub(crate) fn jwt(subject: &str, scopes: Vec<String>) -> Self {
        Self {
            id: format!("jwt:{subject}").into(),
            scheme: Scheme::Jwt,
            key_id: None,
            scopes: Scopes::Listed(scopes.into()),
        }
    }

    /// A caller without credentials on an open service: every scope.
    pub(crate) fn open() -> Self {
        Self {
            id: Self::ANONYMOUS.into(),
            scheme: Scheme::Anonymous,
            key_id: None,
            scopes: Scopes::All,
        }
    }

    /// A caller of a public route: no scope.
    pub fn anonymous() -> Self {
        Self {
            id: Self::ANONYMOUS.into(),
            scheme: Scheme::Anonymous,
            key_id: None,
            scopes: Scopes::Listed(Arc::from([])),
        }
    }

    /// The id of every anonymous principal.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// `key:<name>`, `jwt:<sub>` or `anonymous`: what a service records as an owner.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How the principal proved who it is.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The API key's id (never the key), for logs; `None` for other schemes.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.scopes {
            Scopes::All => true,
            Scopes::Listed(scopes) => scopes.iter().any(|s| s == scope),
        }
    }

    /// `Ok` when the principal holds `scope`; else 403 `forbidden` naming it (with the
    /// `WWW-Authenticate: Bearer error="insufficient_scope"` RFC 6750 describes).
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            return Ok(());
        }
        let error = ApiError::new(codes::FORBIDDEN, format!("this needs the scope {scope:?}"));
        let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
        Err(match HeaderValue::from_str(&challenge) {
            Ok(value) => error.with_header(header::WWW_AUTHENTICATE, value),
            Err(_) => error,
        })
    }

    /// Whether the principal may see what `owner` owns: its own things, or everything with
    /// `admin_scope`.
    pub fn may_see(&self, owner: &str, admin_scope: &str) -> bool {
        *self.id == *owner || self.has_scope(admin_scope)
    }
}

/// The principal the edge attached to the request; anonymous (no scope) where the edge did
/// not authenticate (public routes, steward's own routes).
impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let principal = req.extensions().get::<Principal>().cloned();
        ready(Ok(principal.unwrap_or_else(Principal::anonymous)))
    }
}
