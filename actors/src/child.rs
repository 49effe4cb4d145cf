//! A started child, and how an actix actor becomes one.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};
use futures::channel::oneshot;
use futures::future::{AbortHandle, Abortable, LocalBoxFuture, Shared};
use futures::FutureExt;

/// How a child ended.
///
/// `Clone` because two parties await the same end: the supervisor (to decide on a restart)
/// and, during shutdown, the phase that stopped the child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The child stopped on its own or because it was asked to.
    Normal,
    /// The child panicked or failed; the text says why (the panic message, the I/O error).
    Failed(String),
}

/// A started child: a future that resolves when it has ended, and a way to ask it to stop.
///
/// The supervisor does not care what the child is (an actor, the HTTP server, a worker pool);
/// it only needs to know when it ends and how to ask it to end.
pub struct Running {
    exited: Shared<LocalBoxFuture<'static, Exit>>,
    stop: Rc<dyn Fn()>,
    /// Makes the child's task panic; only actors started by this module have one, and only
    /// when the `testing` feature is on (see [`Running::kill`]).
    kill: Option<Rc<dyn Fn()>>,
}

impl Running {
    /// `exited` resolves when the child has ended; `stop` asks it to stop gracefully and must
    /// return at once (the end is observed through `exited`).
    pub fn new(exited: impl Future<Output = Exit> + 'static, stop: impl Fn() + 'static) -> Self {
        Self {
            exited: exited.boxed_local().shared(),
            stop: Rc::new(stop),
            kill: None,
        }
    }

    fn killed_by(mut self, kill: Option<Rc<dyn Fn()>>) -> Self {
        self.kill = kill;
        self
    }

    /// Makes the child panic inside its own task, as a bug would, so that the supervisor sees
    /// a real failure and restarts it. False when the child cannot be killed this way: it is
    /// not an actor started by [`start_actor`] or [`start_plain_actor`], or the crate was built
    /// without the `testing` feature (the hook costs a poll on every message, so production
    /// builds leave it out).
    pub fn kill(&self) -> bool {
        self.kill.as_ref().map(|kill| kill()).is_some()
    }

    /// Resolves when the child has ended; may be awaited any number of times.
    pub fn exited(&self) -> Shared<LocalBoxFuture<'static, Exit>> {
        self.exited.clone()
    }

    /// A handle that asks the child to stop gracefully.
    pub fn stopper(&self) -> Rc<dyn Fn()> {
        Rc::clone(&self.stop)
    }
}

/// Asks a supervised actor to stop gracefully.
///
/// Every actor started with [`start_actor`] handles it; most answer with `ctx.stop()`, one that
/// holds resources in other systems (locks) releases them first.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop;

/// Starts `actor` on the current arbiter and watches its task; asked to stop, it gets a
/// [`Stop`] message, so it can finish or release what it holds first.
///
/// Why not `Actor::start`: when a handler panics, actix drops the actor's task and closes its
/// mailbox, and nobody hears of it. Here the actor's context future is polled inside
/// `catch_unwind`, so a panic becomes [`Exit::Failed`] with the panic message, the process
/// keeps running, and the supervisor can restart the actor.
pub fn start_actor<A>(actor: A) -> (Addr<A>, Running)
where
    A: Actor<Context = Context<A>> + Handler<Stop>,
{
    let context = Context::new();
    let addr = context.address();
    let (task, kill) = killable(context.into_future(actor));
    let stopper = addr.clone();
    let running = Running::new(watch(task), move || stopper.do_send(Stop));
    (addr, running.killed_by(kill))
}

/// [`start_actor`] for an actor with nothing to finish: asked to stop, its task is ended where
/// it is (its `stopping` and `stopped` still run; messages still queued are dropped), so it
/// needs no [`Stop`] handler.
pub fn start_plain_actor<A>(actor: A) -> (Addr<A>, Running)
where
    A: Actor<Context = Context<A>>,
{
    let context = Context::new();
    let addr = context.address();
    let (abort, registration) = AbortHandle::new_pair();
    let (task, kill) = killable(Abortable::new(context.into_future(actor), registration));
    let running = Running::new(watch(task), move || abort.abort());
    (addr, running.killed_by(kill))
}

/// A hook that makes the child's task panic.
type Kill = Option<Rc<dyn Fn()>>;

/// `task`, and a hook that makes it panic at its next poll: the panic unwinds out of the
/// actor's task like any bug's would, and [`watch`] reports it as [`Exit::Failed`].
#[cfg(feature = "testing")]
fn killable<F: Future + 'static>(task: F) -> (LocalBoxFuture<'static, ()>, Kill) {
    use std::cell::RefCell;
    let (kill, killed) = oneshot::channel::<()>();
    let killed = async move {
        match killed.await {
            Ok(()) => panic!("killed on purpose (Supervisor Kill)"),
            // The child is gone and its hook with it: nothing will ever kill this task.
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    let task = async move {
        futures::pin_mut!(task, killed);
        futures::future::select(task, killed).await;
    };
    let kill = RefCell::new(Some(kill));
    let hook: Rc<dyn Fn()> = Rc::new(move || {
        if let Some(kill) = kill.borrow_mut().take() {
            let _ = kill.send(());
        }
    });
    (task.boxed_local(), Some(hook))
}

/// Without the `testing` feature, the task as it is.
#[cfg(not(feature = "testing"))]
fn killable<F: Future + 'static>(task: F) -> (F, Kill) {
    (task, None)
}

/// Spawns an actor's task under `catch_unwind` and resolves with how it ended. (Only the
/// actors that need it pay for the abort handle: it is polled on every message.)
fn watch<F: Future + 'static>(task: F) -> impl Future<Output = Exit> {
    let mut task = Box::pin(task);
    let (done_tx, done_rx) = oneshot::channel();
    actix_rt::spawn(async move {
        let exit = match AssertUnwindSafe(task.as_mut()).catch_unwind().await {
            Ok(_) => Exit::Normal,
            Err(payload) => Exit::Failed(panic_message(payload.as_ref())),
        };
        // Dropping a context that is still "alive" (as after a panic or an abort) polls it once
        // more to run `stopped()`; a second panic there must not escape into the arbiter either.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(task)));
        let _ = done_tx.send(exit);
    });
    done_rx.map(|exit| exit.unwrap_or_else(|_| Exit::Failed("actor task vanished".into())))
}

/// The text of a panic payload (`panic!` with a literal or with a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        format!("panicked: {text}")
    } else if let Some(text) = payload.downcast_ref::<String>() {
        format!("panicked: {text}")
    } else {
        "panicked".to_owned()
    }
}
