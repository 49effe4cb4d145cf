//! The supervisor on its own, with small test actors instead of stores: restart types, panic
//! capture, intensity, and the tier order of the shutdown.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use steward_actors::supervisor::{ChildState, ListChildren, Shutdown};
use steward_actors::{
    start_actor, Backoff, ChildInfo, ChildSpec, Escalation, Intensity, Metrics, Outcome, Readiness,
    Restart, ShutdownPlan, ShutdownReason, Stop, Supervisor, SupervisorConfig, Terminated, Tier,
};

/// A child that panics or stops on request, and records its stop in a shared journal.
struct Probe {
    name: &'static str,
    journal: Rc<RefCell<Vec<String>>>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
enum Order {
    Panic,
    Quit,
}

impl Handler<Order> for Probe {
    type Result = ();
    fn handle(&mut self, order: Order, ctx: &mut Context<Self>) {
        match order {
            Order::Panic => panic!("{} was told to panic", self.name),
            Order::Quit => ctx.stop(),
        }
    }
}

impl Handler<Stop> for Probe {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.journal.borrow_mut().push(self.name.to_owned());
        ctx.stop();
    }
}

fn config(escalation: Escalation, max_restarts: u32) -> SupervisorConfig {
    SupervisorConfig {
        intensity: Intensity {
            max_restarts,
            window: Duration::from_secs(60),
        },
        backoff: Backoff {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        reset_after: Duration::from_secs(30),
        escalation,
    }
}

fn plan() -> ShutdownPlan {
    ShutdownPlan {
        drain_delay: Duration::ZERO,
        http_timeout: Duration::from_secs(1),
        workers_timeout: Duration::from_secs(1),
        stores_timeout: Duration::from_secs(1),
        total: Duration::from_secs(5),
    }
}

type Current = Rc<RefCell<Option<Addr<Probe>>>>;

/// A child spec whose every incarnation is published in `current`.
fn probe(
    name: &'static str,
    tier: Tier,
    restart: Restart,
    config: &SupervisorConfig,
    journal: &Rc<RefCell<Vec<String>>>,
) -> (ChildSpec, Current) {
    let current: Current = Rc::default();
    let published = Rc::clone(&current);
    let journal = Rc::clone(journal);
    let spec = ChildSpec::new(name, tier, config, move || {
        let (addr, running) = start_actor(Probe {
            name,
            journal: Rc::clone(&journal),
        });
        *published.borrow_mut() = Some(addr);
        Ok(running)
    })
    .restart(restart);
    (spec, current)
}

/// Starts a supervisor over `children`.
fn supervise(
    config: SupervisorConfig,
    readiness: &Readiness,
    children: Vec<ChildSpec>,
) -> (Addr<Supervisor>, Terminated) {
    let metrics = Arc::new(Metrics::new().unwrap());
    let (supervisor, terminated) = Supervisor::new(config, plan(), readiness.clone(), metrics);
    let supervisor = children.into_iter().fold(supervisor, Supervisor::child);
    (supervisor.start(), terminated)
}

async fn child(supervisor: &Addr<Supervisor>, name: &str) -> ChildInfo {
    let children = supervisor.send(ListChildren).await.unwrap();
    children.into_iter().find(|c| c.name == name).unwrap()
}

async fn until(
    supervisor: &Addr<Supervisor>,
    name: &str,
    check: impl Fn(&ChildInfo) -> bool,
) -> ChildInfo {
    for _ in 0..250 {
        let info = child(supervisor, name).await;
        if check(&info) {
            return info;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name} never reached the expected state: {:?}",
        child(supervisor, name).await
    );
}

fn send(current: &Current, order: Order) {
    current.borrow().as_ref().unwrap().do_send(order);
}

#[actix_rt::test]
async fn restart_types_decide_what_happens_after_an_end() {
    let journal = Rc::default();
    let config = config(Escalation::Degrade, 10);
    let (permanent, p) = probe(
        "permanent",
        Tier::Stores,
        Restart::Permanent,
        &config,
        &journal,
    );
    let (transient, t) = probe(
        "transient",
        Tier::Stores,
        Restart::Transient,
        &config,
        &journal,
    );
    let (temporary, o) = probe(
        "temporary",
        Tier::Stores,
        Restart::Temporary,
        &config,
        &journal,
    );
    let children = vec![permanent, transient, temporary];
    let (supervisor, _terminated) = supervise(config, &Readiness::default(), children);
    for name in ["permanent", "transient", "temporary"] {
        until(&supervisor, name, |c| c.state == ChildState::Running).await;
    }

    send(&p, Order::Quit);
    until(&supervisor, "permanent", |c| {
        c.restarts == 1 && c.state == ChildState::Running
    })
    .await;

    send(&t, Order::Quit);
    until(&supervisor, "transient", |c| c.state == ChildState::Stopped).await;

    send(&o, Order::Panic);
    let temporary = until(&supervisor, "temporary", |c| c.state == ChildState::Failed).await;
    assert_eq!(temporary.restarts, 0);
    assert!(temporary
        .last_error
        .unwrap()
        .contains("temporary was told to panic"));
}

#[actix_rt::test]
async fn a_transient_child_that_panics_is_restarted() {
    let journal = Rc::default();
    let config = config(Escalation::Degrade, 10);
    let (spec, current) = probe(
        "flaky",
        Tier::Workers,
        Restart::Transient,
        &config,
        &journal,
    );
    let (supervisor, _terminated) = supervise(config, &Readiness::default(), vec![spec]);
    for round in 1..=3 {
        until(&supervisor, "flaky", |c| c.state == ChildState::Running).await;
        send(&current, Order::Panic);
        until(&supervisor, "flaky", |c| {
            c.restarts == round && c.state == ChildState::Running
        })
        .await;
    }
}

#[actix_rt::test]
async fn escalation_exit_runs_the_shutdown_with_code_70() {
    let journal = Rc::default();
    let config = config(Escalation::Exit, 2);
    let (crashing, current) = probe(
        "crashing",
        Tier::Stores,
        Restart::Permanent,
        &config,
        &journal,
    );
    let readiness = Readiness::default();
    let (supervisor, terminated) = supervise(config, &readiness, vec![crashing]);
    for restarts in 0..=2 {
        until(&supervisor, "crashing", |c| {
            c.restarts == restarts && c.state == ChildState::Running
        })
        .await;
        send(&current, Order::Panic);
    }
    assert_eq!(
        terminated.await.exit_code,
        70,
        "the third restart in the window escalates"
    );
    assert!(readiness.is_shutting_down());
}

#[actix_rt::test]
async fn shutdown_stops_tiers_from_the_top_down() {
    let journal: Rc<RefCell<Vec<String>>> = Rc::default();
    let config = config(Escalation::Degrade, 10);
    // Declared in scrambled order on purpose: the tier decides, not the declaration.
    let (store, _) = probe("store", Tier::Stores, Restart::Permanent, &config, &journal);
    let (http, _) = probe("http", Tier::Http, Restart::Permanent, &config, &journal);
    let (worker, _) = probe(
        "worker",
        Tier::Workers,
        Restart::Permanent,
        &config,
        &journal,
    );
    let readiness = Readiness::default();
    let (supervisor, terminated) = supervise(config, &readiness, vec![store, http, worker]);
    until(&supervisor, "http", |c| c.state == ChildState::Running).await;

    supervisor.do_send(Shutdown(ShutdownReason::Signal("test")));
    supervisor.do_send(Shutdown(ShutdownReason::Signal("again")));
    let report = terminated.await;
    assert_eq!(report.exit_code, 0);
    assert!(readiness.is_shutting_down());
    assert_eq!(*journal.borrow(), ["http", "worker", "store"]);
    let steps: Vec<_> = report.steps.iter().map(|step| step.phase).collect();
    assert_eq!(
        steps,
        ["readiness", "drain_delay", "http", "workers", "stores"],
        "the report follows the sequence: {report:?}"
    );
    assert!(report.steps.iter().all(|step| step.outcome == Outcome::Ok));
    let children = supervisor.send(ListChildren).await.unwrap();
    assert!(
        children.iter().all(|c| c.state == ChildState::Stopped),
        "{children:?}"
    );
}
