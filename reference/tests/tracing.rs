//! Distributed tracing against a collector that decodes the real OTLP protobuf: one trace
//! from the edge through the actors to PostgreSQL and Redis, jobs as traces of their own
//! linked to the request, the trace id in the logs, and a collector that is down, failing or
//! slow costing requests nothing.
//!
//! Each test runs the built binary: OpenTelemetry's tracer provider is one per process.

mod common;

use std::time::Duration;

use common::otlp::{attribute, hex, Behaviour, Collector};
use common::service;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use steward::testing::{eventually, Process};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn traced(collector: &Collector, vars: &[(&str, &str)]) -> Process {
    let mut all = vec![
        ("STEWARD__TRACING__ENABLED", "true"),
        ("STEWARD__TRACING__ENDPOINT", collector.endpoint.as_str()),
        ("STEWARD__TRACING__BATCH_DELAY", "50ms"),
        ("STEWARD__LOG__LEVEL", "info"),
    ];
    all.extend_from_slice(vars);
    let service = service::start(&all).await;
    service.until_ready().await;
    service
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn account(service: &Process, balance: i64) -> i64 {
    let reply = client()
        .post(service.url("/v1/accounts"))
        .json(&json!({"name": "holder", "initial_balance": balance}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    reply.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The spans of `trace_id` the collector has, once `done` holds for them.
async fn trace_of(
    collector: &Collector,
    trace_id: &str,
    what: &str,
    done: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    eventually(Duration::from_secs(10), what, || async {
        let spans: Vec<Span> = collector
            .spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        if done(&spans) {
            Ok(spans)
        } else {
            Err(spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        }
    })
    .await
}

/// Whether `span` hangs (at any depth) under the span `ancestor`.
fn descends(spans: &[Span], span: &Span, ancestor: &[u8]) -> bool {
    let mut parent = span.parent_span_id.clone();
    for _ in 0..spans.len() {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.span_id == parent) {
            Some(up) => parent = up.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

#[tokio::test]
async fn a_transfer_is_one_trace_from_the_edge_to_the_stores() {
    let collector = Collector::start(Behaviour::Accept).await;
    let service = traced(&collector, &[]).await;
    let (from, to) = (account(&service, 100).await, account(&service, 0).await);

    let response = client()
        .post(service.url("/v1/transfers"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .header("idempotency-key", "traced-transfer")
        .json(&json!({"from": from, "to": to, "amount": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let traceparent = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")) && traceparent.ends_with("-01"),
        "{traceparent}"
    );

    let spans = trace_of(&collector, TRACE_ID, "the transfer's spans", |spans| {
        spans.iter().any(|s| s.name == "POST /v1/transfers")
            && spans
                .iter()
                .any(|s| attribute(s, "db.system.name").as_deref() == Some("postgresql"))
            && spans
                .iter()
                .any(|s| attribute(s, "db.system.name").as_deref() == Some("redis"))
    })
    .await;
    let server = spans
        .iter()
        .find(|s| s.name == "POST /v1/transfers")
        .unwrap();
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "a child of the caller"
    );
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(hex(&server.span_id).as_str()),
        "the response names the server span"
    );
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/v1/transfers")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("201")
    );

    let actor = spans
        .iter()
        .find(|s| s.name == "postgres Transact")
        .expect("the database actor's span of the transfer's transaction");
    assert_eq!(
        attribute(actor, "steward.actor").as_deref(),
        Some("postgres")
    );
    assert!(descends(&spans, actor, &server.span_id));
    assert!(attribute(actor, "steward.mailbox_wait_s").is_some());
    assert!(attribute(actor, "steward.handling_s").is_some());

    let statement = spans
        .iter()
        .find(|s| s.parent_span_id == actor.span_id)
        .expect("the transaction's attempt, under the actor's span");
    assert_eq!(
        attribute(statement, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        attribute(statement, "db.operation.name").as_deref(),
        Some(statement.name.as_str())
    );
    assert_eq!(
        attribute(statement, "steward.db.attempt").as_deref(),
        Some("1")
    );

    let redis = spans
        .iter()
        .find(|s| attribute(s, "db.system.name").as_deref() == Some("redis"))
        .unwrap();
    assert!(descends(&spans, redis, &server.span_id), "{}", redis.name);
    assert!(
        redis.name.chars().all(|c| c.is_ascii_uppercase()),
        "named after the command, not its keys: {}",
        redis.name
    );

    // Every log line about the request carries its trace.
    let lines: Vec<String> = service
        .log()
        .into_iter()
        .filter(|l| l.contains(&request_id))
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    }
}

#[tokio::test]
async fn a_job_is_a_trace_of_its_own_linked_to_the_request_that_queued_it() {
    let collector = Collector::start(Behaviour::Accept).await;
    let service = traced(&collector, &[]).await;
    let id = account(&service, 10).await;
    let response = client()
        .post(service.url("/v1/jobs"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({
            "kind": "ledger.statement",
            "payload": {"account_id": id, "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let job: serde_json::Value = response.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();

    let request = trace_of(&collector, TRACE_ID, "the enqueue", |spans| {
        spans
            .iter()
            .any(|s| attribute(s, "steward.job.id").as_deref() == Some(job_id.as_str()))
    })
    .await;
    let enqueue = request
        .iter()
        .find(|s| attribute(s, "steward.job.id").as_deref() == Some(job_id.as_str()))
        .unwrap();

    let run = eventually(Duration::from_secs(10), "the job's run", || async {
        collector
            .spans()
            .into_iter()
            .find(|s| {
                s.name == "job ledger.statement"
                    && attribute(s, "steward.job.id").as_deref() == Some(job_id.as_str())
            })
            .ok_or(())
    })
    .await;
    assert_ne!(hex(&run.trace_id), TRACE_ID, "a trace of its own");
    assert!(run.parent_span_id.is_empty(), "the root of its trace");
    assert_eq!(run.links.len(), 1);
    assert_eq!(hex(&run.links[0].trace_id), TRACE_ID);
    assert_eq!(run.links[0].span_id, enqueue.span_id);
    assert_eq!(
        attribute(&run, "steward.job.outcome").as_deref(),
        Some("succeeded")
    );

    // What the job did hangs under its run.
    let run_trace = hex(&run.trace_id);
    let work = trace_of(&collector, &run_trace, "the job's statements", |spans| {
        spans
            .iter()
            .any(|s| attribute(s, "db.system.name").as_deref() == Some("postgresql"))
    })
    .await;
    let statement = work
        .iter()
        .find(|s| attribute(s, "db.system.name").as_deref() == Some("postgresql"))
        .unwrap();
    assert!(descends(&work, statement, &run.span_id));
}

#[tokio::test]
async fn without_tracing_a_request_still_continues_its_callers_trace_in_headers_and_logs() {
    let service = service::start(&[("STEWARD__LOG__LEVEL", "info")]).await;
    let response = client()
        .get(service.url("/version"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    let traceparent = response.headers()["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "{traceparent}"
    );
    assert!(!traceparent.contains(CALLER_SPAN), "a span id of its own");
    service.wait_for_line(&format!("trace_id={TRACE_ID}")).await;

    // A malformed traceparent is ignored: a new trace, not an error.
    let response = client()
        .get(service.url("/version"))
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let fresh = response.headers()["traceparent"].to_str().unwrap();
    assert_eq!(fresh.len(), 55, "{fresh}");
    assert!(fresh.ends_with("-00"), "not sampled: nobody records it");
}

/// Requests to a service exporting to `endpoint`, which does not take the spans, are all
/// answered; the failure is logged once and counted, and the shutdown (with its last flush)
/// ends in time.
async fn unaffected_by_a_failing_collector(endpoint: &str) {
    let mut service = service::start(&[
        ("STEWARD__TRACING__ENABLED", "true"),
        ("STEWARD__TRACING__ENDPOINT", endpoint),
        ("STEWARD__TRACING__BATCH_DELAY", "50ms"),
        ("STEWARD__LOG__LEVEL", "info"),
    ])
    .await;
    service.until_ready().await;
    for _ in 0..50 {
        let reply = service.get("/v1/accounts").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    service
        .wait_for_line("spans cannot be exported to the OTLP collector")
        .await;
    let failed = service
        .metrics()
        .await
        .value("tracing_spans_exported_total{result=\"failed\"}");
    assert!(failed > 0.0, "{failed}");
    service.terminate();
    let status = service.exit_status(Duration::from_secs(12)).await;
    assert!(status.success(), "{status:?}");
    let warnings = service
        .log()
        .iter()
        .filter(|l| l.contains("spans cannot be exported"))
        .count();
    assert_eq!(
        warnings, 1,
        "logged once per change of state, not per batch"
    );
    assert!(
        service
            .log()
            .iter()
            .any(|l| l.contains("phase=after_stores") && l.contains("task=flush_spans")),
        "the last spans were flushed once the stores had stopped"
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_requests_nothing() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    unaffected_by_a_failing_collector(&endpoint).await;
}

#[tokio::test]
async fn a_collector_answering_500_costs_requests_nothing() {
    let collector = Collector::start(Behaviour::Fail).await;
    unaffected_by_a_failing_collector(&collector.endpoint).await;
    assert!(collector.exports() > 0);
}

#[tokio::test]
async fn a_slow_collector_drops_spans_and_counts_them_instead_of_slowing_requests() {
    let collector = Collector::start(Behaviour::Slow(Duration::from_secs(5))).await;
    let mut service = traced(
        &collector,
        &[
            ("STEWARD__TRACING__QUEUE_SIZE", "8"),
            ("STEWARD__TRACING__BATCH_SIZE", "4"),
            ("STEWARD__TRACING__EXPORT_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let client = client();
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let response = client
            .get(service.url("/v1/accounts"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no request waited for the collector"
    );
    let dropped = service.metrics().await.value("tracing_spans_dropped_total");
    assert!(dropped > 0.0, "{dropped}");
    assert!(collector.exports() > 0);
    service.terminate();
    let status = service.exit_status(Duration::from_secs(12)).await;
    assert!(status.success(), "{status:?}");
}
