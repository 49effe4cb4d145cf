//! How a supervised child is declared.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::child::Running;

/// The layer a child belongs to. Children start in ascending tier order and stop in descending
/// order, so nothing is stopped while something above it may still call it: HTTP drains before
/// the workers, the workers before the stores they use.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Store actors: started first, stopped last.
    Stores,
    /// Job workers: between the stores and HTTP.
    Workers,
    /// HTTP servers: started last, drained first.
    Http,
}

impl Tier {
    /// Every tier, in start order.
    pub const ALL: [Tier; 3] = [Tier::Stores, Tier::Workers, Tier::Http];

    /// The tier's name, as logs, metrics and the shutdown phases name it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Stores => "stores",
            Tier::Workers => "workers",
            Tier::Http => "http",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a child that ended is started again (the OTP restart types).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Always: the service cannot work without it.
    Permanent,
    /// Only when it failed (panic or error); a normal stop is final.
    Transient,
    /// Never: a one-off.
    Temporary,
}

/// At most `max_restarts` restarts of one child within `window`; one more escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Intensity {
    /// Restarts allowed within `window`.
    pub max_restarts: u32,
    /// The sliding window `max_restarts` counts in.
    #[serde(with = "crate::duration")]
    pub window: Duration,
}

impl Default for Intensity {
    /// 5 restarts in 60 s: enough to ride out a store blip, few enough that a crash loop is
    /// noticed within a minute.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// What the supervisor does when a child exceeds its restart intensity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Escalation {
    /// Stay up and keep serving liveness, report not-ready, and keep restarting the child at
    /// the longest backoff; ready again once it has stayed up for the quiet period.
    Degrade,
    /// Run the ordered shutdown and exit with code 70 (EX_SOFTWARE), so the orchestrator
    /// replaces the instance.
    Exit,
}

/// Supervisor settings shared by every child unless a spec overrides them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// How many restarts are tolerated before escalating.
    pub intensity: Intensity,
    /// Delay before each restart.
    pub backoff: Backoff,
    /// A child that stayed up this long is considered healthy again: its backoff starts over
    /// and a degraded mark is cleared.
    #[serde(with = "crate::duration")]
    pub reset_after: Duration,
    /// What exceeding the intensity does.
    pub escalation: Escalation,
}

/// Why an incarnation of a child could not start (a socket that cannot be cloned, a server
/// that cannot be built): logged, and counted as a failure of the child.
pub type StartFailure = Box<dyn std::error::Error>;

/// Starts one incarnation of a child. Called again on every restart.
pub type Factory = Box<dyn FnMut() -> Result<Running, StartFailure>>;

/// A child's declaration: what it is called, where it sits, how to start it and how to treat
/// its failures.
pub struct ChildSpec {
    /// Unique among the children: logs, `/admin/actors` and `actor_restarts_total` name it.
    pub name: String,
    /// Decides the start and stop order.
    pub tier: Tier,
    /// Which ends are followed by a restart.
    pub restart: Restart,
    /// Delay before each restart.
    pub backoff: Backoff,
    /// How many restarts are tolerated before escalating.
    pub intensity: Intensity,
    /// Starts an incarnation; called again on every restart.
    pub factory: Factory,
}

impl ChildSpec {
    /// A permanent child with the supervisor's default backoff and intensity.
    pub fn new(
        name: impl Into<String>,
        tier: Tier,
        config: &SupervisorConfig,
        factory: impl FnMut() -> Result<Running, StartFailure> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            tier,
            restart: Restart::Permanent,
            backoff: config.backoff,
            intensity: config.intensity,
            factory: Box::new(factory),
        }
    }

    /// Sets the restart type (permanent by default).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the delay before each restart (`[supervisor] backoff` by default).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how many restarts are tolerated before escalating (`[supervisor] intensity` by
    /// default).
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }
}
