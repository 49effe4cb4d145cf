//! Shutdown under load, with the real binary: SIGTERM in the middle of a mixed load answers
//! every request the process accepted, refuses (rather than fails) the ones after, runs its
//! phases in order and exits 0; a rolling restart fails no request; every acknowledged job is
//! done exactly once. bench/chaos runs the rolling restart 20 times on a release build.

mod common;

use common::rollout::{Fleet, Outcome};

fn assert_clean(outcome: &Outcome, run: &str) {
    let row = format!(
        "{}\n{}\nnot 2xx: {:?}\nfailures: {:#?}\ntheir log: {:#?}",
        Outcome::HEADER,
        outcome.row(run),
        outcome.tally.refusals,
        outcome.tally.samples,
        outcome.log_of_samples()
    );
    eprintln!("{row}");
    assert!(
        outcome.tally.count_in(200..300) > 0,
        "no load was served: {row}"
    );
    assert_eq!(outcome.failed(), 0, "failed requests: {row}");
    for stop in &outcome.stops {
        // Without an access log, no unanswered request could be found accepted.
        assert!(stop.log.iter().any(|line| line.contains("steward::access")));
        assert_eq!(stop.exit_code, Some(0), "{stop:?}");
        assert!(stop.orderly(), "phases out of order or late: {stop:?}");
    }
    assert_eq!(outcome.unfinished_jobs, 0, "{row}");
    assert_eq!(outcome.repeated_jobs, 0, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_what_was_accepted_and_refuses_the_rest() {
    let fleet = Fleet::new(&[]).await;
    let outcome = fleet.stop_under_load(200).await;
    assert_clean(&outcome, "sigterm under load");
    assert!(
        outcome.tally.refused > 0,
        "load sent after the exit must meet refused connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_fails_no_request() {
    let fleet = Fleet::new(&[]).await;
    let outcome = fleet.roll(3, 50).await;
    assert_clean(&outcome, "rolling restart x3");
}
