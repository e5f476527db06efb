//! What to run: the plan format (a Compose-file subset) and, later, the built-in roles.
//!
//! A [`Plan`] is the resolved, validated form every producer hands to the supervisor:
//! the Compose parser (`kboot run -f`), the `master` / `worker` roles and the tests.

pub mod cluster;
pub mod compose;
mod model;

pub use model::{Device, Healthcheck, Plan, PlanFile, Propagation, RestartPolicy, Service, Volume};
