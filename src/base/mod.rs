//! Foundations every other module stands on and that know nothing of kboot:
//! atomic file writes with an explicit durability, JSON records, error chains,
//! and facts about processes from `/proc`. Nothing here imports another
//! module of the crate.

pub mod error;
pub mod fs;
pub mod mountinfo;
pub mod proc;
pub mod record;
pub mod systemd;
