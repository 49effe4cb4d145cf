//! hello: a service of its own on steward, each extension point used once. A library, so that
//! its tests start the same service in-process (`steward::testing`); `main.rs` runs it.
use actix::{Actor, Context as Mailbox, Handler, Message};
use steward::prelude::*;
#[derive(serde::Deserialize)] // `[hello]`: STEWARD__HELLO__EXCLAIM overrides it
struct Hello {
    exclaim: u8,
}
impl Section for Hello {
    const NAME: &'static str = "hello";
}
const NOBODY: ErrorCode = ErrorCode::new(404, "nobody", "there is nobody to greet here");
struct Tally(u64); // counts greetings; panics on `Count(true)`, and is started again
impl Actor for Tally {
    type Context = Mailbox<Self>;
}
#[derive(Message)]
#[rtype(result = "u64")]
struct Count(bool);
impl Handler<Count> for Tally {
    type Result = u64;
    fn handle(&mut self, Count(boom): Count, _: &mut Mailbox<Self>) -> u64 {
        self.0 += if boom { panic!("boom") } else { 1 };
        self.0
    }
}
struct Greet; // the job kind `greet`: its result greets its payload
impl Job for Greet {
    const KIND: &'static str = "greet";
    type Payload = String;
    async fn run(_: Context, job: JobRun<String>) -> Result<Value, JobError> {
        Ok(json!(format!("hello, {}", job.payload)))
    }
}
async fn hello(
    ctx: Context,
    by: Principal,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let count = ctx.actor::<Tally>()?.send(Count(false)).await?;
    let job = ctx.jobs().enqueue::<Greet>(name.to_string()).await?.id;
    let greeting = format!("hello, {name}{}", "!".repeat(ctx.config::<Hello>().exclaim.into()));
    Ok(HttpResponse::Ok()
        .json(json!({"greeting": greeting, "count": count, "job": job, "by": by.id()})))
}
async fn boom(ctx: Context) -> Result<HttpResponse, ApiError> {
    ctx.actor::<Tally>()?.do_send(Count(true));
    Ok(HttpResponse::Accepted().finish())
}
async fn farewell(ctx: Context) {
    log::info!("{} says goodbye", ctx.name())
}
/// hello, declared: what `main` runs and what the tests start in-process.
pub fn service() -> Service {
    Service::new("hello")
        .backends(Backends::REDIS)
        .defaults("[hello]\nexclaim = 1")
        .config::<Hello>()
        .post("/hello/{name}", hello)
        .get("/nobody", || async { Err::<HttpResponse, _>(ApiError::from(NOBODY)) })
        .public("/nobody") // no credentials needed, even where auth.required is on
        .post("/boom", boom)
        .actor("tally", |_| Tally(0))
        .job::<Greet>()
        .readiness("tally", Criticality::Critical, |c| async move { c.actor::<Tally>().map(drop) })
        .on_shutdown(Phase::AfterHttp, "farewell", std::time::Duration::from_secs(1), farewell)
}
