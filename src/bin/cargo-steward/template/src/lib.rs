//! {{name}}: a service on steward. [`service`] declares everything it adds to the framework;
//! `main.rs` runs it, and the tests start the same value in-process with
//! `steward::testing::TestApp`.
//!
//! The steward guide (`cargo doc --open -p steward`) shows the other extension points: actors
//! (`Service::actor`), jobs (`Service::job`), readiness checks, shutdown tasks.

use steward::actors::db::Query;
use steward::actors::migrations::Migration;
use steward::prelude::*;
use steward::trace::Call;

/// `[greetings]`: this service's own configuration, its defaults in `config/default.toml`;
/// `STEWARD__GREETINGS__WORD` overrides `word`, like any key.
#[derive(serde::Deserialize)]
pub struct Greetings {
    /// The word a greeting starts with.
    pub word: String,
}

impl Section for Greetings {
    const NAME: &'static str = "greetings";

    fn validate(&self) -> Result<(), Invalid> {
        if self.word.is_empty() || self.word.len() > 32 {
            return Err(Invalid::new("word", "a word of 1 to 32 bytes"));
        }
        Ok(())
    }
}

/// The tables of this service, applied in order at start-up and by `{{name}} migrate`.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "greetings",
    sql: "CREATE TABLE greetings (name text PRIMARY KEY, count bigint NOT NULL)",
}];

/// A name too long or empty: every name a client chooses has a bound.
pub const INVALID_NAME: ErrorCode =
    ErrorCode::new(422, "invalid_name", "a name is 1 to 64 bytes of UTF-8");

/// `POST /v1/greetings/{name}`: counts the greeting in PostgreSQL and answers it, naming who
/// asked (the caller's principal: an API key's, a token's, or `anonymous` where
/// `auth.required` is off). The statement carries the request's deadline (`[deadlines]`, or a
/// client's `Request-Timeout`).
async fn greet(
    ctx: Context,
    by: Principal,
    deadline: RequestDeadline,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::from(INVALID_NAME));
    }
    let counted = Query {
        name: "greet",
        sql: "INSERT INTO greetings (name, count) VALUES ($1, 1) \
              ON CONFLICT (name) DO UPDATE SET count = greetings.count + 1 RETURNING count",
        params: vec![Box::new(name.clone())],
        deadline: *deadline,
    };
    let rows = ctx.db()?.call(counted).await??;
    let count: i64 = rows.first().map_or(0, |row| row.get(0));
    let word = &ctx.config::<Greetings>().word;
    let greeting = format!("{word}, {name}");
    Ok(HttpResponse::Ok().json(json!({"greeting": greeting, "count": count, "by": by.id()})))
}

/// {{name}}, declared: what `main` runs and what the tests start.
pub fn service() -> Service {
    Service::new("{{name}}")
        .version(env!("CARGO_PKG_VERSION"))
        .backends(Backends::ALL)
        .defaults(include_str!("../config/default.toml"))
        .config::<Greetings>()
        .migrations(MIGRATIONS)
        .errors(&[INVALID_NAME])
        .post("/v1/greetings/{name}", greet)
}
