//! Ownership: with authentication required, an account, its transfers, its idempotency keys
//! and the jobs about it belong to the principal that made them. Another principal gets 404
//! (no enumeration), cannot debit them (but may credit them), and does not list them;
//! `ledger:admin` sees everything. Principals here hold real API keys and real signed JWTs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{spawn_app_with, Caller};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use steward::codes;
use steward::testing::{Reply, TestApp};
use steward_reference::errors;

const SECRET: &str = "an-hs256-secret-for-the-ownership-tests";

async fn spawn() -> TestApp {
    let dir = std::env::temp_dir().join(format!("steward-own-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, SECRET).unwrap();
    spawn_app_with(&[
        ("STEWARD__AUTH__REQUIRED", "true"),
        ("STEWARD__AUTH__JWT__ENABLED", "true"),
        ("STEWARD__AUTH__JWT__ISSUER", "https://id.test"),
        ("STEWARD__AUTH__JWT__AUDIENCE", "ledger"),
        ("STEWARD__AUTH__JWT__SECRET_FILE", secret.to_str().unwrap()),
    ])
    .await
}

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = json!({"sub": sub, "iss": "https://id.test", "aud": "ledger", "exp": exp});
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn ids(page: &Reply) -> Vec<i64> {
    page.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {}", page.text))
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect()
}

async fn balance(app: &TestApp, id: i64) -> i64 {
    let row = app
        .sql()
        .await
        .query_one("SELECT balance FROM accounts WHERE id = $1", &[&id])
        .await
        .unwrap();
    row.get(0)
}

#[actix_rt::test]
async fn a_stranger_neither_reads_lists_nor_debits_an_account_but_may_credit_it() {
    let app = spawn().await;
    app.get("/v1/accounts")
        .await
        .assert_error(codes::UNAUTHENTICATED);
    let (alice, bob) = (
        Caller::issue(&app, "alice", &[]).await,
        Caller::issue(&app, "bob", &[]).await,
    );
    let auditor = Caller::issue(&app, "auditor", &["ledger:admin"]).await;
    let (a, b) = (alice.account(1000).await, bob.account(1000).await);

    let own = alice.get(&format!("/v1/accounts/{a}")).await;
    assert_eq!((own.status, &own.body["owner"]), (200, &json!("key:alice")));
    // Read by its owner first, so the stranger's read is answered from the cache, then past it.
    for path in [
        format!("/v1/accounts/{a}"),
        format!("/v1/accounts/{a}/transfers"),
    ] {
        bob.get(&path).await.assert_error(errors::ACCOUNT_NOT_FOUND);
    }
    let uncached = bob
        .request(reqwest::Method::GET, &format!("/v1/accounts/{a}"))
        .header("cache-control", "no-cache");
    Reply::of(uncached)
        .await
        .assert_error(errors::ACCOUNT_NOT_FOUND);
    // A missing account answers exactly the same.
    let missing = bob.get(&format!("/v1/accounts/{}", a + 1000)).await;
    let hidden = bob.get(&format!("/v1/accounts/{a}")).await;
    assert_eq!(
        missing.body["error"]["message"]
            .as_str()
            .map(|m| m.replace(&(a + 1000).to_string(), "N")),
        hidden.body["error"]["message"]
            .as_str()
            .map(|m| m.replace(&a.to_string(), "N"))
    );

    assert_eq!(ids(&alice.get("/v1/accounts").await), vec![a]);
    assert_eq!(ids(&bob.get("/v1/accounts").await), vec![b]);
    assert_eq!(ids(&auditor.get("/v1/accounts").await), vec![a, b]);
    assert_eq!(auditor.get(&format!("/v1/accounts/{a}")).await.status, 200);

    let debit = bob
        .transfer("t-1", &json!({"from": a, "to": b, "amount": 500}))
        .await;
    debit.assert_error(errors::ACCOUNT_NOT_FOUND);
    // Not even ledger:admin debits another's account: it sees, it does not spend.
    let admin_debit = auditor
        .transfer("t-1", &json!({"from": a, "to": b, "amount": 1}))
        .await;
    admin_debit.assert_error(errors::ACCOUNT_NOT_FOUND);
    assert_eq!(
        (balance(&app, a).await, balance(&app, b).await),
        (1000, 1000)
    );
    let credit = bob
        .transfer("t-2", &json!({"from": b, "to": a, "amount": 300}))
        .await;
    assert_eq!(credit.status, 201, "{}", credit.text);
    assert_eq!(
        (balance(&app, a).await, balance(&app, b).await),
        (1300, 700)
    );
    // Alice sees the transfer on her account; Bob still does not see her account's list.
    let history = alice.get(&format!("/v1/accounts/{a}/transfers")).await;
    assert_eq!(history.body["items"][0]["amount"], 300);

    // The ledger still balances: every unit that left an account arrived in another.
    let sums = app
        .sql()
        .await
        .query_one(
            "SELECT sum(balance)::bigint, sum(initial_balance)::bigint FROM accounts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sums.get::<_, i64>(0), sums.get::<_, i64>(1));
}

#[actix_rt::test]
async fn an_idempotency_key_of_one_principal_means_nothing_to_another() {
    let app = spawn().await;
    let (alice, bob) = (
        Caller::issue(&app, "alice", &[]).await,
        Caller::issue(&app, "bob", &[]).await,
    );
    let (a, b, sink) = (
        alice.account(100).await,
        bob.account(100).await,
        bob.account(0).await,
    );
    let first = alice
        .transfer("pay-1", &json!({"from": a, "to": sink, "amount": 10}))
        .await;
    assert_eq!(first.status, 201);
    // Bob's "pay-1", with another body, is neither refused as a reused key nor a replay.
    let theirs = bob
        .transfer("pay-1", &json!({"from": b, "to": sink, "amount": 20}))
        .await;
    assert_eq!(
        (theirs.status, theirs.header("idempotent-replayed")),
        (201, Some("false"))
    );
    assert_eq!(theirs.body["amount"], 20);
    let replay = alice
        .transfer("pay-1", &json!({"from": a, "to": sink, "amount": 10}))
        .await;
    assert_eq!(
        (replay.header("idempotent-replayed"), &replay.body["id"]),
        (Some("true"), &first.body["id"])
    );
}

#[actix_rt::test]
async fn jobs_belong_to_who_queued_them_and_admin_kinds_need_the_scope() {
    let app = spawn().await;
    let (alice, bob) = (
        Caller::issue(&app, "alice", &[]).await,
        Caller::issue(&app, "bob", &[]).await,
    );
    let auditor = Caller::issue(&app, "auditor", &["ledger:admin"]).await;
    let queued = alice
        .post("/v1/jobs", &json!({"kind": "test.record"}))
        .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let path = format!("/v1/jobs/{}", queued.body["id"].as_str().unwrap());
    let mine = alice.get(&path).await;
    assert_eq!(
        (mine.status, &mine.body["principal"]),
        (200, &json!("key:alice"))
    );
    bob.get(&path).await.assert_error(errors::JOB_NOT_FOUND);
    assert_eq!(auditor.get(&path).await.status, 200);

    // A statement of someone else's account is refused like the account itself.
    let a = alice.account(10).await;
    let statement = json!({"kind": "ledger.statement", "payload": {"account_id": a, "from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}});
    bob.post("/v1/jobs", &statement)
        .await
        .assert_error(errors::ACCOUNT_NOT_FOUND);
    assert_eq!(alice.post("/v1/jobs", &statement).await.status, 202);

    // The whole ledger and every principal's failures are the operator's.
    for denied in [
        alice
            .post("/v1/jobs", &json!({"kind": "ledger.reconcile"}))
            .await,
        alice.get("/v1/jobs/dead").await,
    ] {
        denied.assert_error(codes::FORBIDDEN);
    }
    assert_eq!(
        auditor
            .post("/v1/jobs", &json!({"kind": "ledger.reconcile"}))
            .await
            .status,
        202
    );
    assert_eq!(auditor.get("/v1/jobs/dead").await.status, 200);
}

#[actix_rt::test]
async fn a_token_principal_owns_its_accounts_as_a_key_principal_does() {
    let app = spawn().await;
    let carol = token("carol");
    let opened = Reply::of(
        app.request(reqwest::Method::POST, "/v1/accounts")
            .bearer_auth(&carol)
            .json(&json!({"name": "carol's", "initial_balance": 50})),
    )
    .await;
    assert_eq!(
        (opened.status, &opened.body["owner"]),
        (201, &json!("jwt:carol")),
        "{}",
        opened.text
    );
    let id = opened.body["id"].as_i64().unwrap();
    let path = format!("/v1/accounts/{id}");
    let read = |token: String| {
        let request = app.request(reqwest::Method::GET, &path).bearer_auth(token);
        Reply::of(request)
    };
    assert_eq!(read(carol.clone()).await.status, 200);
    read(token("dave"))
        .await
        .assert_error(errors::ACCOUNT_NOT_FOUND);
    // A key named like the token's subject is another principal ("key:carol").
    Caller::issue(&app, "carol", &[])
        .await
        .get(&path)
        .await
        .assert_error(errors::ACCOUNT_NOT_FOUND);
}
