//! The fault matrix under load: each store fault applied to a running steward process while
//! clients send a steady mixed load. Whatever the fault, the process stays up, no request gets
//! a 500 or no answer, every 503 or 504 says when to retry, readiness follows the fault and comes
//! back, and no acknowledged transfer or job is lost or repeated. bench/chaos runs the same
//! matrix longer, on a release build, and prints the figures.

mod common;

use std::time::Duration;

use common::chaos::{Fault, Report, Rig, Timing};

const TIMING: Timing = Timing {
    before: Duration::from_millis(500),
    fault: Duration::from_secs(3),
    settle: Duration::from_secs(15),
    clients: 4,
    max_restarts: 5,
};

async fn run(fault: Fault) -> Report {
    let mut rig = Rig::start(&[]).await;
    let report = rig.run(fault, TIMING).await;
    eprintln!(
        "{}\n{}\n{}",
        Report::HEADER,
        report.row(),
        report.refusals()
    );
    report
}

/// What every fault must leave intact.
fn assert_promises_kept(report: &Report, fault: Fault) {
    let row = report.row();
    assert!(report.alive, "the process exited: {row}");
    assert!(report.tally.sent > 0, "no load was sent: {row}");
    let unexpected_5xx = report.count_in(500..600) - report.count(503) - report.count(504);
    assert_eq!(unexpected_5xx, 0, "a 5xx other than 503/504: {row}");
    assert_eq!(
        report.tally.transport_errors, 0,
        "requests without an answer: {row}"
    );
    assert_eq!(
        report.tally.unavailable_without_retry_after, 0,
        "503/504 without Retry-After: {row}"
    );
    if fault.must_flip() {
        let flipped = report
            .flipped_after
            .unwrap_or_else(|| panic!("readiness never left ready: {row}"));
        assert!(
            flipped <= Duration::from_secs(2),
            "readiness followed the fault late: {row}"
        );
    }
    assert!(
        report.recovered_after.is_some(),
        "no recovery within {:?}: {row}",
        TIMING.settle
    );
    assert!(report.ledger_whole, "the ledger invariant broke: {row}");
    assert_eq!(
        report.lost_transfers, 0,
        "acknowledged transfers lost: {row}"
    );
    assert_eq!(
        report.unfinished_jobs, 0,
        "acknowledged jobs not done: {row}"
    );
    // The queue lives in Redis and delivers at least once: a job that finished just as Redis
    // failed, before its completion was recorded, runs again (the job kinds are idempotent).
    // No other fault may repeat a job.
    if !fault.hits_redis() {
        assert_eq!(
            report.repeated_jobs, 0,
            "jobs whose effect ran twice: {row}"
        );
    }
}

#[tokio::test]
async fn redis_down() {
    let report = run(Fault::RedisDown).await;
    assert_promises_kept(&report, Fault::RedisDown);
    // Account reads and transfers carry on from PostgreSQL: not everything fails.
    assert!(report.count_in(200..300) > 0);
}

#[tokio::test]
async fn redis_slow() {
    assert_promises_kept(&run(Fault::RedisSlow).await, Fault::RedisSlow);
}

#[tokio::test]
async fn redis_connections_reset() {
    assert_promises_kept(&run(Fault::RedisReset).await, Fault::RedisReset);
}

#[tokio::test]
async fn postgres_down() {
    assert_promises_kept(&run(Fault::PostgresDown).await, Fault::PostgresDown);
}

#[tokio::test]
async fn postgres_slow() {
    assert_promises_kept(&run(Fault::PostgresSlow).await, Fault::PostgresSlow);
}

#[tokio::test]
async fn postgres_connections_reset_mid_transaction() {
    assert_promises_kept(&run(Fault::PostgresReset).await, Fault::PostgresReset);
}

#[tokio::test]
async fn a_store_actor_panicking_past_its_restart_intensity() {
    let report = run(Fault::StorePanics).await;
    assert_promises_kept(&report, Fault::StorePanics);
    assert!(
        report.restarts > u64::from(TIMING.max_restarts),
        "{}",
        report.row()
    );
}
