//! Healthchecks: the service's `test` command run inside the container
//! (`kboot exec`) every `interval`; `retries` failures in a row after the
//! `start_period` make it unhealthy, one success makes it healthy. The result
//! is kept in `paths.container(name)/health.json` for `ps`. Like Docker, an
//! unhealthy container is reported, not restarted.

use serde::{Deserialize, Serialize};

use crate::base::record::{read_json, write_json, Durability, RecordError};
use crate::plan::Healthcheck;
use crate::state::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// The health of one run of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// `started_at_ms` of the run this record is about; a new run starts over.
    pub run_started_at_ms: u64,
    pub status: Health,
    pub failing_streak: u32,
    /// Unix ms of the last probe.
    pub last_check_ms: u64,
}

impl HealthRecord {
    pub fn new(run_started_at_ms: u64) -> Self {
        Self {
            run_started_at_ms,
            status: Health::Starting,
            failing_streak: 0,
            last_check_ms: 0,
        }
    }

    /// When the next probe is due.
    pub fn next_check_ms(&self, check: &Healthcheck) -> u64 {
        let interval = u64::try_from(check.interval.as_millis()).unwrap_or(u64::MAX);
        if self.last_check_ms == 0 {
            self.run_started_at_ms.saturating_add(interval)
        } else {
            self.last_check_ms.saturating_add(interval)
        }
    }

    /// Applies one probe result taken at `now`.
    pub fn record(&mut self, check: &Healthcheck, ok: bool, now: u64) {
        self.last_check_ms = now;
        if ok {
            self.status = Health::Healthy;
            self.failing_streak = 0;
            return;
        }
        let grace = u64::try_from(check.start_period.as_millis()).unwrap_or(u64::MAX);
        let in_start_period = now < self.run_started_at_ms.saturating_add(grace);
        if in_start_period && self.status == Health::Starting {
            // Failures while starting up do not count (Docker's start_period).
            return;
        }
        self.failing_streak += 1;
        if self.failing_streak >= check.retries.max(1) {
            self.status = Health::Unhealthy;
        }
    }
}

pub fn read_health(paths: &Paths, name: &str) -> Option<HealthRecord> {
    read_json(&paths.container(name).health())
}

pub fn write_health(paths: &Paths, name: &str, rec: &HealthRecord) -> Result<(), RecordError> {
    write_json(&paths.container(name).health(), rec, Durability::Synced)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check() -> Healthcheck {
        Healthcheck {
            test: vec!["true".into()],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 3,
            start_period: Duration::from_secs(5),
        }
    }

    #[test]
    fn health_failures_in_the_start_period_do_not_count() {
        let c = check();
        let mut h = HealthRecord::new(1_000);
        h.record(&c, false, 2_000);
        h.record(&c, false, 3_000);
        assert_eq!((h.status, h.failing_streak), (Health::Starting, 0));
        h.record(&c, true, 4_000);
        assert_eq!(h.status, Health::Healthy);
    }

    #[test]
    fn health_turns_unhealthy_after_retries_failures_in_a_row() {
        let c = check();
        let mut h = HealthRecord::new(0);
        h.record(&c, true, 6_000);
        h.record(&c, false, 7_000);
        h.record(&c, false, 8_000);
        assert_eq!(h.status, Health::Healthy);
        h.record(&c, false, 9_000);
        assert_eq!((h.status, h.failing_streak), (Health::Unhealthy, 3));
        h.record(&c, true, 10_000);
        assert_eq!((h.status, h.failing_streak), (Health::Healthy, 0));
    }

    #[test]
    fn health_checks_are_due_every_interval() {
        let c = check();
        let mut h = HealthRecord::new(500);
        assert_eq!(h.next_check_ms(&c), 1_500);
        h.record(&c, true, 1_600);
        assert_eq!(h.next_check_ms(&c), 2_600);
    }
}
