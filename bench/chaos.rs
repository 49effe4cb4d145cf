//! `bench/chaos`: the fault matrix and the rolling restart on a release build, printed as
//! Markdown tables. The same code as tests/faults.rs and tests/rollout.rs (tests/common), run
//! longer and harder: each fault lasts `--fault-secs` under `--clients` connections, and the
//! rolling restart goes `--rounds` times under `--rollout-clients`.
//!
//!   bash bench/chaos                          # the defaults below
//!   bash bench/chaos --only rollout --rounds 5

#[path = "../reference/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::chaos::{Fault, Report, Rig, Timing};
use common::rollout::{Fleet, Outcome};

/// Production-sized pools, ping deadline and HTTP workers over the test configuration.
const VARS: [(&str, &str); 6] = [
    ("STEWARD__HEALTH__TIMEOUT", "1s"),
    ("STEWARD__SERVER__WORKERS", "2"),
    ("STEWARD__REDIS__POOL__MAX_SIZE", "16"),
    ("STEWARD__POSTGRES__POOL__MAX_SIZE", "16"),
    ("STEWARD__REDIS__POOL__CONNECTION_TIMEOUT", "2s"),
    ("STEWARD__POSTGRES__POOL__CONNECTION_TIMEOUT", "2s"),
];

struct Args {
    only: Option<String>,
    fault_secs: u64,
    clients: usize,
    rounds: usize,
    rollout_clients: usize,
}

fn args() -> Args {
    let mut args = Args {
        only: None,
        fault_secs: 10,
        clients: 32,
        rounds: 20,
        rollout_clients: 200,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse().unwrap_or_else(|_| panic!("{flag}: a number"));
        match flag.as_str() {
            "--only" => args.only = Some(value.clone()),
            "--fault-secs" => args.fault_secs = number() as u64,
            "--clients" => args.clients = number(),
            "--rounds" => args.rounds = number(),
            "--rollout-clients" => args.rollout_clients = number(),
            _ => panic!("unknown flag {flag}; see bench/chaos.rs"),
        }
    }
    args
}

/// The Markdown delimiter row under `header`.
fn separator(header: &str) -> String {
    "|---".repeat(header.matches('|').count() - 1) + "|"
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let wanted = |part: &str| args.only.as_deref().is_none_or(|only| only == part);
    if wanted("matrix") {
        let timing = Timing {
            before: Duration::from_secs(2),
            fault: Duration::from_secs(args.fault_secs),
            settle: Duration::from_secs(30),
            clients: args.clients,
            max_restarts: 5,
        };
        println!(
            "\nFault matrix: each fault {} s under {} clients (release build, fresh process each)\n",
            args.fault_secs, args.clients
        );
        println!("{}\n{}", Report::HEADER, separator(Report::HEADER));
        let mut details = Vec::new();
        for fault in Fault::ALL {
            let mut rig = Rig::start(&VARS).await;
            let report = rig.run(fault, timing).await;
            println!("{}", report.row());
            details.push(report.refusals());
        }
        println!("\nNot 2xx, by request kind (status 0: no answer):\n");
        for line in details {
            println!("- {line}");
        }
    }
    if wanted("rollout") {
        println!(
            "\nShutdown under load: {} clients, drain_delay 1 s (release build)\n",
            args.rollout_clients
        );
        println!("{}\n{}", Outcome::HEADER, separator(Outcome::HEADER));
        let fleet = Fleet::new(&VARS).await;
        let stop = fleet.stop_under_load(args.rollout_clients).await;
        println!("{}", stop.row("SIGTERM under load"));
        let fleet = Fleet::new(&VARS).await;
        let roll = fleet.roll(args.rounds, args.rollout_clients).await;
        println!("{}", roll.row(&format!("rolling restart x{}", args.rounds)));
        for outcome in [&stop, &roll] {
            for sample in &outcome.tally.samples {
                println!("- 5xx: {sample}");
            }
            for (n, disorderly) in outcome
                .stops
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.orderly())
            {
                println!(
                    "- stop {n} not orderly: exit {:?}, phases {:?}",
                    disorderly.exit_code, disorderly.phases
                );
            }
        }
    }
}
