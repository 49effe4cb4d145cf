//! `POST /v1/transfers`: idempotency, refusals, paging, and the ledger invariant under load.

mod common;

use std::collections::{HashMap, HashSet};

use common::{spawn_app, Accounts};

use futures::stream::{self, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use steward::testing::TestApp;

async fn balance(app: &TestApp, id: i64) -> i64 {
    let account: Value = app.get(&format!("/v1/accounts/{id}")).await.body;
    account["balance"].as_i64().unwrap()
}

/// Sends a transfer; returns status, `Idempotent-Replayed`, and the body.
async fn transfer(app: &TestApp, key: Option<&str>, body: Value) -> (u16, Option<String>, Value) {
    let mut request = app.http().post(app.url("/v1/transfers")).json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, replayed, response.json().await.unwrap())
}

#[actix_rt::test]
async fn a_transfer_moves_money_once_and_replays_its_answer() {
    let app = spawn_app().await;
    let (a, b) = (app.account(100).await, app.account(5).await);
    let body = json!({"from": a, "to": b, "amount": 30});

    let (status, replayed, first) = transfer(&app, Some("key-1"), body.clone()).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("false")));
    assert_eq!(
        (
            first["from"].as_i64(),
            first["to"].as_i64(),
            first["amount"].as_i64()
        ),
        (Some(a), Some(b), Some(30))
    );
    assert_eq!(
        (balance(&app, a).await, balance(&app, b).await),
        (70, 35),
        "the cached accounts were invalidated"
    );

    let (status, replayed, again) = transfer(&app, Some("key-1"), body).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first, "the same body, byte for byte");
    assert_eq!(
        (balance(&app, a).await, balance(&app, b).await),
        (70, 35),
        "no money moved twice"
    );

    let (status, _, reused) = transfer(
        &app,
        Some("key-1"),
        json!({"from": a, "to": b, "amount": 31}),
    )
    .await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
}

#[actix_rt::test]
async fn refusals_are_documented_and_replayed_too() {
    let app = spawn_app().await;
    let (a, b) = (app.account(10).await, app.account(i64::MAX - 5).await);
    let code = |body: &Value| {
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let (status, replayed, poor) = transfer(
        &app,
        Some("poor"),
        json!({"from": a, "to": b, "amount": 11}),
    )
    .await;
    assert_eq!(
        (status, code(&poor), replayed.as_deref()),
        (409, "insufficient_funds".into(), Some("false"))
    );
    let (status, replayed, again) = transfer(
        &app,
        Some("poor"),
        json!({"from": a, "to": b, "amount": 11}),
    )
    .await;
    assert_eq!(
        (status, code(&again), replayed.as_deref()),
        (409, "insufficient_funds".into(), Some("true"))
    );

    let cases = [
        (
            Some("k2"),
            json!({"from": a, "to": 987654, "amount": 1}),
            404,
            "account_not_found",
        ),
        (
            Some("k3"),
            json!({"from": a, "to": a, "amount": 1}),
            422,
            "same_account",
        ),
        (
            Some("k4"),
            json!({"from": a, "to": b, "amount": 0}),
            422,
            "invalid_amount",
        ),
        (
            Some("k5"),
            json!({"from": a, "to": b, "amount": -5}),
            422,
            "invalid_amount",
        ),
        (
            Some("k6"),
            json!({"from": b, "to": a, "amount": 1, "memo": "x"}),
            422,
            "invalid_body",
        ),
        (
            Some("k7"),
            json!({"from": a, "to": b, "amount": "1"}),
            422,
            "invalid_body",
        ),
        (
            Some("k8"),
            json!({"from": a, "to": b, "amount": 10}),
            422,
            "amount_overflow",
        ),
        (
            None,
            json!({"from": a, "to": b, "amount": 1}),
            400,
            "missing_idempotency_key",
        ),
        (
            Some(&*"k".repeat(256)),
            json!({"from": a, "to": b, "amount": 1}),
            400,
            "invalid_idempotency_key",
        ),
    ];
    for (key, body, status, expected) in cases {
        let (got, _, answer) = transfer(&app, key, body.clone()).await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected.to_owned()),
            "{body}"
        );
    }
    let huge = app
        .http()
        .post(app.url("/v1/transfers"))
        .header("idempotency-key", "k9")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"from": {a}, "to": {b}, "amount": 18446744073709551616}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        huge.status().as_u16(),
        422,
        "amounts beyond i64 are refused"
    );
    assert_eq!(
        (balance(&app, a).await, balance(&app, b).await),
        (10, i64::MAX - 5),
        "nothing moved"
    );
}

#[actix_rt::test]
async fn an_accounts_transfers_page_newest_first() {
    let app = spawn_app().await;
    let (a, b, c) = (
        app.account(100).await,
        app.account(100).await,
        app.account(100).await,
    );
    let mut ids = Vec::new();
    for (n, (from, to)) in [(a, b), (b, a), (c, b), (a, c)].into_iter().enumerate() {
        let (status, _, body) = transfer(
            &app,
            Some(&format!("t{n}")),
            json!({"from": from, "to": to, "amount": 1}),
        )
        .await;
        assert_eq!(status, 201);
        ids.push(body["id"].as_i64().unwrap());
    }
    let mut seen = Vec::new();
    let mut path = format!("/v1/accounts/{a}/transfers?limit=2");
    loop {
        let page: Value = app.get(&path).await.body;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/accounts/{a}/transfers?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [ids[3], ids[1], ids[0]],
        "a's transfers, newest first"
    );
    assert_eq!(app.get("/v1/accounts/777777/transfers").await.status, 404);
}

/// 20 accounts, 2,000 concurrent random transfers, some sent twice with the same key: money
/// is neither created nor destroyed, no balance goes negative, every 201 is stored once, and
/// a replay never moves money again.
#[actix_rt::test]
async fn the_ledger_invariant_holds_under_concurrent_transfers() {
    let app = spawn_app().await;
    let mut accounts = Vec::new();
    for _ in 0..20 {
        accounts.push(app.account(1_000).await);
    }
    let mut rng = rand::rng();
    let requests: Vec<(String, Value)> = (0..2_000)
        .map(|n| {
            let from = accounts[rng.random_range(0..20)];
            let to = loop {
                let to = accounts[rng.random_range(0..20)];
                if to != from {
                    break to;
                }
            };
            (
                format!("load-{n}"),
                json!({"from": from, "to": to, "amount": rng.random_range(1..=300)}),
            )
        })
        .collect();
    // Every tenth request is sent a second time with its key, like a client retrying.
    let sends: Vec<&(String, Value)> = requests.iter().chain(requests.iter().step_by(10)).collect();

    let answers: Vec<(String, u16, Option<String>, Value)> = stream::iter(sends)
        .map(|(key, body)| async {
            // A client retries 503 (contention, restarting store) with the same key.
            loop {
                let (status, replayed, answer) = transfer(&app, Some(key), body.clone()).await;
                if status != 503 {
                    return (key.clone(), status, replayed, answer);
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let mut first_answers: HashMap<String, Value> = HashMap::new();
    let mut created = HashSet::new();
    for (key, status, _, answer) in &answers {
        assert!(matches!(status, 201 | 409), "{status}: {answer}");
        if *status == 201 {
            created.insert(answer["id"].as_i64().unwrap());
        }
        if let Some(earlier) = first_answers.insert(key.clone(), answer.clone()) {
            let (a, b) = (&earlier, answer);
            assert_eq!(
                a.get("id"),
                b.get("id"),
                "a replay answers like the first time"
            );
        }
    }
    let sql = app.sql().await;
    let stored: i64 = sql
        .query_one("SELECT count(*) FROM transfers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        created.len(),
        "every 201 stored exactly once, nothing else"
    );
    let row = sql
        .query_one(
            "SELECT sum(balance)::bigint, sum(initial_balance)::bigint, min(balance) FROM accounts",
            &[],
        )
        .await
        .unwrap();
    let (total, initial, lowest): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(total, initial, "money is neither created nor destroyed");
    assert!(lowest >= 0);
    let moved: i64 = sql
        .query_one(
            "SELECT coalesce(sum(CASE WHEN to_account = a.id THEN amount ELSE -amount END), 0)::bigint
             FROM accounts a JOIN transfers t ON t.from_account = a.id OR t.to_account = a.id
             WHERE a.id = $1",
            &[&accounts[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        1_000 + moved,
        balance(&app, accounts[0]).await,
        "balances agree with the transfers"
    );
}
