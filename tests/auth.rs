//! Authentication at the edge: API keys issued, used and revoked (on another replica too),
//! JWTs with real keys made here, scopes, public routes, the failure throttle, open mode.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rand::Rng;
use serde_json::{json, Value};
use steward::prelude::*;
use steward::testing::{Reply, TestApp};

const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "steward-tests";

async fn whoami(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(json!({"id": principal.id(), "key_id": principal.key_id()}))
}

async fn report(principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require_scope("reports:read")?;
    Ok(HttpResponse::Ok().json(json!({"for": principal.id()})))
}

/// A service's own key issuance: a principal with `keys:issue` gets keys for its users.
async fn issue_for_user(
    ctx: Context,
    principal: Principal,
    user: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require_scope("keys:issue")?;
    let keys = ctx
        .api_keys()
        .ok_or_else(|| ApiError::from(steward::codes::NOT_FOUND))?;
    let issued = keys.issue(user.into_inner(), vec![]).await?;
    Ok(HttpResponse::Created().json(json!({"id": issued.id, "key": issued.key})))
}

async fn revoke_for_user(ctx: Context, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let keys = ctx
        .api_keys()
        .ok_or_else(|| ApiError::from(steward::codes::NOT_FOUND))?;
    match keys.revoke(&id).await? {
        true => Ok(HttpResponse::NoContent().finish()),
        false => Err(ApiError::from(steward::codes::NOT_FOUND)),
    }
}

fn service() -> Service {
    Service::new("authed")
        .backends(Backends::REDIS)
        .get("/v1/whoami", whoami)
        .get("/v1/report", report)
        .post("/v1/users/{user}/key", issue_for_user)
        .routes(|cfg| {
            cfg.route("/v1/keys/{id}", web::delete().to(revoke_for_user));
        })
        .public("/v1/public/")
        .get("/v1/public/ping", whoami)
}

/// The service with `auth.required` on and `vars` on top.
async fn spawn(vars: &[(&str, &str)]) -> TestApp {
    let mut spawn = TestApp::with(service())
        .config_dir("the-test-has-no-config-folder")
        .env("STEWARD__AUTH__REQUIRED", "true");
    for (name, value) in vars {
        spawn = spawn.env(name, value);
    }
    spawn.spawn().await
}

async fn with_key(app: &TestApp, path: &str, key: &str) -> Reply {
    Reply::of(
        app.request(reqwest::Method::GET, path)
            .header("x-api-key", key),
    )
    .await
}

async fn with_token(app: &TestApp, path: &str, token: &str) -> Reply {
    Reply::of(app.request(reqwest::Method::GET, path).bearer_auth(token)).await
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A file in a fresh temporary folder.
fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steward-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// An Ed25519 key pair made for the test.
struct Ed25519 {
    signing: EncodingKey,
    public_pem: String,
    /// The public key, base64url, as a JWK's `x`.
    x: String,
}

fn ed25519() -> Ed25519 {
    let mut seed = [0u8; 32];
    rand::rng().fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    // PKCS#8 and SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): a fixed header each, then
    // the seed or the public key.
    let private = [
        &hex_bytes("302e020100300506032b657004220420")[..],
        &seed[..],
    ]
    .concat();
    let spki = [&hex_bytes("302a300506032b6570032100")[..], &public[..]].concat();
    Ed25519 {
        signing: EncodingKey::from_ed_der(&private),
        public_pem: format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki)
        ),
        x: URL_SAFE_NO_PAD.encode(public),
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "scope": scope})
}

fn sign(key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn jwt_vars(key_file: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STEWARD__AUTH__JWT__ENABLED", "true".into()),
        ("STEWARD__AUTH__JWT__ISSUER", ISSUER.into()),
        ("STEWARD__AUTH__JWT__AUDIENCE", AUDIENCE.into()),
        ("STEWARD__AUTH__JWT__KEY_FILE", key_file.into()),
    ]
}

fn borrowed<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[actix_rt::test]
async fn without_credentials_a_service_route_is_401_and_the_open_routes_stay_open() {
    let app = spawn(&[]).await;
    let reply = app.get("/v1/whoami").await;
    reply.assert_error(steward::codes::UNAUTHENTICATED);
    let challenge = reply.header("www-authenticate").expect("a challenge");
    assert!(challenge.contains("ApiKey"), "{challenge}");
    // No route can be told from a protected one without credentials.
    app.get("/v1/no-such-route")
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
    for open in [
        "/health/live",
        "/health/ready",
        "/version",
        "/openapi.json",
        "/metrics",
    ] {
        assert_eq!(app.get(open).await.status, 200, "{open}");
    }
    let public = app.get("/v1/public/ping").await;
    assert_eq!(
        (public.status, &public.body["id"]),
        (200, &json!("anonymous"))
    );
    assert_eq!(
        app.metric("auth_failures_total{reason=\"missing\"}").await,
        2.0
    );
}

#[actix_rt::test]
async fn api_keys_are_issued_once_listed_without_secrets_and_revoked_at_once() {
    let app = spawn(&[]).await;
    let key = app.api_key("billing", &["reports:read"]).await;
    let me = with_key(&app, "/v1/whoami", &key).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["id"], "key:billing");
    let id = me.body["key_id"].as_str().unwrap().to_owned();
    assert!(key.contains(&id));
    assert_eq!(with_key(&app, "/v1/report", &key).await.status, 200);

    let listed = Reply::of(app.admin(reqwest::Method::GET, "/admin/api-keys")).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["keys"][0]["id"], id.as_str());
    assert_eq!(listed.body["keys"][0]["scopes"], json!(["reports:read"]));
    assert!(
        !listed.text.contains(&key[20..]),
        "the list shows no secret"
    );
    // Redis keeps a keyed hash, not the key.
    let mut redis = app.redis_connection().await;
    let stored: Vec<String> = redis::cmd("HVALS")
        .arg(app.key("auth:api-keys"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(&key[20..]) && stored[0].contains("digest"));

    // A key of the right shape but another secret, and a malformed one, do not get in.
    let forged = format!("{}{}", &key[..key.len() - 4], "0000");
    with_key(&app, "/v1/whoami", &forged)
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
    with_key(&app, "/v1/whoami", "not-a-key")
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);

    let path = format!("/admin/api-keys/{id}");
    let revoked = Reply::of(app.admin(reqwest::Method::DELETE, &path)).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    with_key(&app, "/v1/whoami", &key)
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
    let again = Reply::of(app.admin(reqwest::Method::DELETE, &path)).await;
    again.assert_error(steward::codes::NOT_FOUND);

    for bad in [
        json!({"name": ""}),
        json!({"name": "a b"}),
        json!({"name": "x", "scopes": ["a b"]}),
    ] {
        let reply = Reply::of(
            app.admin(reqwest::Method::POST, "/admin/api-keys")
                .json(&bad),
        )
        .await;
        reply.assert_error(steward::codes::INVALID);
    }
}

#[actix_rt::test]
async fn a_key_revoked_on_one_replica_fails_on_another_once_its_cache_entry_is_gone() {
    let prefix = format!("authed-replicas:{}:", uuid::Uuid::new_v4().simple());
    let vars = [("STEWARD__REDIS__KEY_PREFIX", prefix.as_str())];
    let (a, b) = (spawn(&vars).await, spawn(&vars).await);
    let key = a.api_key("mobile", &[]).await;
    // B verifies the key once, and serves it from its cache from then on.
    assert_eq!(with_key(&b, "/v1/whoami", &key).await.status, 200);
    let id = with_key(&a, "/v1/whoami", &key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked =
        Reply::of(a.admin(reqwest::Method::DELETE, &format!("/admin/api-keys/{id}"))).await;
    assert_eq!(revoked.status, 204);
    with_key(&a, "/v1/whoami", &key)
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
    // auth.cache_ttl is 500 ms: every entry B holds was made before the revoke.
    tokio::time::sleep(Duration::from_millis(600)).await;
    with_key(&b, "/v1/whoami", &key)
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
    let mut redis = a.redis_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}auth:api-keys"))
        .query_async(&mut redis)
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_missing_scope_is_403_in_the_envelope() {
    let app = spawn(&[]).await;
    let key = app.api_key("reader", &["other:scope"]).await;
    let reply = with_key(&app, "/v1/report", &key).await;
    reply.assert_error(steward::codes::FORBIDDEN);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
}

#[actix_rt::test]
async fn tokens_must_be_signed_by_the_key_current_and_for_this_issuer_and_audience() {
    let key = ed25519();
    let key_file = temp_file("jwt.pem", &key.public_pem);
    let vars = jwt_vars(key_file.to_str().unwrap());
    let app = spawn(&borrowed(&vars)).await;

    let good = sign(&key.signing, None, &claims("alice", "reports:read other"));
    let me = with_token(&app, "/v1/whoami", &good).await;
    assert_eq!(
        (me.status, &me.body["id"]),
        (200, &json!("jwt:alice")),
        "{}",
        me.text
    );
    assert_eq!(with_token(&app, "/v1/report", &good).await.status, 200);
    // Within the 30 s leeway.
    let mut late = claims("alice", "");
    late["exp"] = json!(now() - 10);
    assert_eq!(
        with_token(&app, "/v1/whoami", &sign(&key.signing, None, &late))
            .await
            .status,
        200
    );

    let mut refused = Vec::new();
    let mut expired = claims("alice", "");
    expired["exp"] = json!(now() - 120);
    refused.push(("expired", sign(&key.signing, None, &expired)));
    let mut early = claims("alice", "");
    early["nbf"] = json!(now() + 300);
    refused.push(("not yet valid", sign(&key.signing, None, &early)));
    let mut audience = claims("alice", "");
    audience["aud"] = json!("another-service");
    refused.push(("wrong audience", sign(&key.signing, None, &audience)));
    let mut issuer = claims("alice", "");
    issuer["iss"] = json!("https://evil.example.test");
    refused.push(("wrong issuer", sign(&key.signing, None, &issuer)));
    let mut no_sub = claims("alice", "");
    no_sub.as_object_mut().unwrap().remove("sub");
    refused.push(("no sub", sign(&key.signing, None, &no_sub)));
    refused.push((
        "another key",
        sign(&ed25519().signing, None, &claims("alice", "")),
    ));
    let encode_part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "typ": "JWT"})),
        encode_part(&claims("alice", "reports:read"))
    );
    refused.push(("alg none", none));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = encode_part(&claims("mallory", "reports:read"));
    refused.push(("tampered claims", parts.join(".")));
    // The public key used as an HMAC secret: the algorithm-confusion attack.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", ""),
        &EncodingKey::from_secret(key.public_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    refused.push(("HS256 with the public key", confused));
    refused.push(("garbage", "a.b.c".to_owned()));
    for (why, token) in refused {
        let reply = with_token(&app, "/v1/whoami", &token).await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.text);
        assert_eq!(reply.code(), Some("unauthenticated"), "{why}");
    }
    // An API key sent with a token is refused too: one credential a request.
    let both = app
        .request(reqwest::Method::GET, "/v1/whoami")
        .bearer_auth(&good)
        .header("x-api-key", "stw_x");
    assert_eq!(Reply::of(both).await.status, 401);
}

#[actix_rt::test]
async fn a_jwks_picks_the_key_by_kid_and_an_hs256_secret_works_alone() {
    let (one, two) = (ed25519(), ed25519());
    let jwks = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": one.x, "kid": "one"},
        {"kty": "OKP", "crv": "Ed25519", "x": two.x, "kid": "two", "alg": "EdDSA"},
    ]});
    let jwks_file = temp_file("jwks.json", &jwks.to_string());
    let mut vars = jwt_vars("");
    vars.push((
        "STEWARD__AUTH__JWT__JWKS_FILE",
        jwks_file.to_str().unwrap().to_owned(),
    ));
    let app = spawn(&borrowed(&vars)).await;
    for (key, kid) in [(&one, "one"), (&two, "two")] {
        let token = sign(&key.signing, Some(kid), &claims(kid, ""));
        assert_eq!(
            with_token(&app, "/v1/whoami", &token).await.body["id"],
            format!("jwt:{kid}")
        );
    }
    let crossed = sign(&one.signing, Some("two"), &claims("one", ""));
    assert_eq!(with_token(&app, "/v1/whoami", &crossed).await.status, 401);
    let unknown = sign(&one.signing, Some("three"), &claims("one", ""));
    assert_eq!(with_token(&app, "/v1/whoami", &unknown).await.status, 401);

    let secret = "an-hs256-secret-of-at-least-32-bytes!";
    let secret_file = temp_file("secret", secret);
    let mut vars = jwt_vars("");
    vars.push((
        "STEWARD__AUTH__JWT__SECRET_FILE",
        secret_file.to_str().unwrap().to_owned(),
    ));
    let app = spawn(&borrowed(&vars)).await;
    let hs = |secret: &str| {
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        encode(&Header::new(Algorithm::HS256), &claims("svc", ""), &key).unwrap()
    };
    assert_eq!(
        with_token(&app, "/v1/whoami", &hs(secret)).await.status,
        200
    );
    assert_eq!(
        with_token(
            &app,
            "/v1/whoami",
            &hs("another-secret-of-at-least-32-bytes!!")
        )
        .await
        .status,
        401
    );
}

#[actix_rt::test]
async fn failed_authentications_are_throttled_per_address_but_verified_keys_keep_working() {
    let app = spawn(&[
        ("STEWARD__AUTH__FAILURE_BURST", "3"),
        ("STEWARD__AUTH__FAILURE_REFILL", "1m"),
        ("STEWARD__AUTH__CACHE_TTL", "1m"),
    ])
    .await;
    let key = app.api_key("steady", &[]).await;
    assert_eq!(with_key(&app, "/v1/whoami", &key).await.status, 200);
    let wrong = format!("stw_{}_{}", "0".repeat(16), "0".repeat(64));
    for _ in 0..3 {
        assert_eq!(with_key(&app, "/v1/whoami", &wrong).await.status, 401);
    }
    let throttled = with_key(&app, "/v1/whoami", &wrong).await;
    throttled.assert_error(steward::codes::TOO_MANY_AUTH_FAILURES);
    assert!(throttled.header("retry-after").is_some());
    // A key verified before is served from the cache: the throttle guards guessing only.
    assert_eq!(with_key(&app, "/v1/whoami", &key).await.status, 200);
    assert_eq!(
        app.metric("auth_failures_total{reason=\"rejected\"}").await,
        3.0
    );
    assert_eq!(
        app.metric("auth_failures_total{reason=\"throttled\"}")
            .await,
        1.0
    );
}

#[actix_rt::test]
async fn an_open_service_lets_anonymous_callers_in_but_still_checks_sent_credentials() {
    let app = spawn(&[("STEWARD__AUTH__REQUIRED", "false")]).await;
    let anonymous = app.get("/v1/report").await;
    assert_eq!(
        (anonymous.status, &anonymous.body["for"]),
        (200, &json!("anonymous"))
    );
    with_key(&app, "/v1/whoami", "stw_wrong")
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
    let key = app.api_key("dev", &[]).await;
    assert_eq!(
        with_key(&app, "/v1/whoami", &key).await.body["id"],
        "key:dev"
    );
}

#[actix_rt::test]
async fn the_openapi_document_declares_the_schemes_per_operation() {
    let app = spawn(&[]).await;
    let document = app.get("/openapi.json").await.body;
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["bearer_jwt"]["bearerFormat"], "JWT");
    assert_eq!(
        document["paths"]["/health/ready"]["get"]["security"],
        json!([{}])
    );
    assert_eq!(
        document["paths"]["/admin/api-keys"]["post"]["security"],
        json!([{"admin_token": []}])
    );
}

#[actix_rt::test]
async fn a_jwt_key_that_cannot_be_loaded_is_a_configuration_error_naming_its_key() {
    let not_a_key = temp_file(
        "jwt.pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    for (file, expected) in [
        ("/no/such/key.pem", "readable"),
        (not_a_key.to_str().unwrap(), "PEM public key"),
    ] {
        let vars = jwt_vars(file);
        let mut spawn = TestApp::with(service()).config_dir("the-test-has-no-config-folder");
        for (name, value) in &vars {
            spawn = spawn.env(name, value);
        }
        match spawn.try_spawn().await {
            Err(steward::StartError::Config(error)) => {
                assert_eq!(error.key, "auth.jwt.key_file");
                assert!(error.expected.contains(expected), "{error}");
            }
            Err(other) => panic!("{file}: {other}"),
            Ok(_) => panic!("{file}: started"),
        }
    }
}

#[actix_rt::test]
async fn an_es256_key_verifies_es256_tokens_only() {
    let mut scalar = [0u8; 32];
    rand::rng().fill(&mut scalar);
    let signing = p256::ecdsa::SigningKey::from_slice(&scalar).expect("a P-256 scalar");
    let point = signing.verifying_key().to_sec1_point(false);
    // PKCS#8 (an RFC 5915 ECPrivateKey with its public key) and SubjectPublicKeyInfo of a
    // P-256 key.
    let pkcs8 = [
        &hex_bytes("308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420")[..],
        &scalar[..],
        &hex_bytes("a144034200")[..],
        point.as_bytes(),
    ]
    .concat();
    let spki = [
        &hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200")[..],
        point.as_bytes(),
    ]
    .concat();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(spki)
    );
    let key_file = temp_file("es256.pem", &pem);
    let app = spawn(&borrowed(&jwt_vars(key_file.to_str().unwrap()))).await;
    let key = EncodingKey::from_ec_der(&pkcs8);
    let es256 = encode(&Header::new(Algorithm::ES256), &claims("erin", ""), &key).unwrap();
    let me = with_token(&app, "/v1/whoami", &es256).await;
    assert_eq!(
        (me.status, &me.body["id"]),
        (200, &json!("jwt:erin")),
        "{}",
        me.text
    );
    // The same key material cannot make the verifier take another algorithm.
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims("erin", ""),
        &EncodingKey::from_secret(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(with_token(&app, "/v1/whoami", &hs).await.status, 401);
}

#[actix_rt::test]
async fn a_service_issues_and_revokes_keys_from_its_own_routes() {
    let app = spawn(&[("STEWARD__AUTH__CACHE_TTL", "1m")]).await;
    let issuer = app.api_key("signup", &["keys:issue"]).await;
    let post = |path: &str, key: &str| {
        let request = app
            .request(reqwest::Method::POST, path)
            .header("x-api-key", key);
        Reply::of(request)
    };
    let issued = post("/v1/users/ann/key", &issuer).await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let (id, key) = (
        issued.body["id"].as_str().unwrap(),
        issued.body["key"].as_str().unwrap(),
    );
    assert_eq!(
        with_key(&app, "/v1/whoami", key).await.body["id"],
        "key:ann"
    );
    post("/v1/users/not%20a%20name/key", &issuer)
        .await
        .assert_error(steward::codes::INVALID);
    post("/v1/users/bob/key", key)
        .await
        .assert_error(steward::codes::FORBIDDEN);

    // Revoked through the service's route: this process forgets it at once, even with a
    // minute of auth.cache_ttl.
    let revoke = app
        .request(reqwest::Method::DELETE, &format!("/v1/keys/{id}"))
        .header("x-api-key", &issuer);
    assert_eq!(Reply::of(revoke).await.status, 204);
    with_key(&app, "/v1/whoami", key)
        .await
        .assert_error(steward::codes::UNAUTHENTICATED);
}
