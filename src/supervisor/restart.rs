//! Restart decisions: Docker's policies with a capped exponential backoff that
//! resets once a container has run for a while. Pure functions of the exit,
//! the counters and the times given, so tests drive them with any clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::RestartPolicy;
use crate::shim::record::ExitRecord;

/// Backoff between restarts: `initial`, doubled after each quick exit, at most
/// `max`; a run of at least `reset_after` starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// Docker's values: 100 ms doubling up to a minute, reset after 10 s of running.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// Restart bookkeeping kept per container across supervisor restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartState {
    /// Restarts so far (shown by `ps`; bounds `on-failure:N`).
    pub restarts: u32,
    /// The delay used for the last restart, 0 when none yet.
    pub last_delay_ms: u64,
}

/// What to do after a container exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Leave it stopped.
    Stay,
    /// Start it again after this delay.
    Restart(Duration),
}

/// Applies the policy to an exit. `ran_for` is how long the run lasted (zero
/// when it never started); `user_stopped` is a `kboot stop` in effect.
pub fn decide(
    policy: RestartPolicy,
    exit: &ExitRecord,
    ran_for: Duration,
    user_stopped: bool,
    state: &mut RestartState,
    backoff: &Backoff,
) -> Decision {
    if user_stopped {
        return Decision::Stay;
    }
    let failed = exit.exit_code != 0 || exit.error.is_some();
    let restart = match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure { max_retries } => failed && max_retries.is_none_or(|n| state.restarts < n),
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    };
    if !restart {
        return Decision::Stay;
    }
    let initial = u64::try_from(backoff.initial.as_millis()).unwrap_or(u64::MAX);
    let max = u64::try_from(backoff.max.as_millis()).unwrap_or(u64::MAX);
    let delay = if state.last_delay_ms == 0 || ran_for >= backoff.reset_after {
        initial
    } else {
        state.last_delay_ms.saturating_mul(2).min(max)
    };
    state.restarts += 1;
    state.last_delay_ms = delay;
    Decision::Restart(Duration::from_millis(delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitRecord {
        ExitRecord {
            exit_code: code,
            ..Default::default()
        }
    }

    fn run(policy: RestartPolicy, codes: &[i32], ran_for: Duration) -> Vec<Decision> {
        let mut st = RestartState::default();
        codes
            .iter()
            .map(|c| decide(policy, &exit(*c), ran_for, false, &mut st, &Backoff::default()))
            .collect()
    }

    const QUICK: Duration = Duration::from_millis(50);
    fn ms(n: u64) -> Decision {
        Decision::Restart(Duration::from_millis(n))
    }

    #[test]
    fn restart_no_never_restarts() {
        assert_eq!(run(RestartPolicy::No, &[1, 0], QUICK), [Decision::Stay, Decision::Stay]);
    }

    #[test]
    fn restart_on_failure_only_after_failures_and_at_most_n_times() {
        let p = RestartPolicy::OnFailure { max_retries: Some(2) };
        assert_eq!(run(p, &[1, 1, 1], QUICK), [ms(100), ms(200), Decision::Stay]);
        assert_eq!(run(p, &[0], QUICK), [Decision::Stay]);
        let unbounded = RestartPolicy::OnFailure { max_retries: None };
        assert_eq!(run(unbounded, &[2; 4], QUICK).len(), 4);
        assert!(run(unbounded, &[2; 4], QUICK).iter().all(|d| *d != Decision::Stay));
    }

    #[test]
    fn restart_always_backs_off_exponentially_up_to_the_cap() {
        let d = run(RestartPolicy::Always, &[0; 12], QUICK);
        assert_eq!(&d[..4], &[ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(d[11], ms(60_000));
    }

    #[test]
    fn restart_backoff_resets_after_a_stable_run() {
        let mut st = RestartState::default();
        let b = Backoff::default();
        for _ in 0..5 {
            decide(RestartPolicy::Always, &exit(1), QUICK, false, &mut st, &b);
        }
        assert_eq!(st.last_delay_ms, 1600);
        let d = decide(
            RestartPolicy::Always,
            &exit(1),
            Duration::from_secs(11),
            false,
            &mut st,
            &b,
        );
        assert_eq!(d, ms(100));
        assert_eq!(st.restarts, 6);
    }

    #[test]
    fn restart_user_stop_wins_over_every_policy() {
        let mut st = RestartState::default();
        for p in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            let d = decide(p, &exit(143), QUICK, true, &mut st, &Backoff::default());
            assert_eq!(d, Decision::Stay);
        }
        assert_eq!(st.restarts, 0);
    }

    #[test]
    fn restart_on_failure_counts_a_start_error_as_failure() {
        let mut st = RestartState::default();
        let e = ExitRecord {
            exit_code: 0,
            error: Some("create".into()),
            ..Default::default()
        };
        let p = RestartPolicy::OnFailure { max_retries: None };
        assert_eq!(
            decide(p, &e, Duration::ZERO, false, &mut st, &Backoff::default()),
            ms(100)
        );
    }
}
