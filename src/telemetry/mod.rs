//! Telemetry: Prometheus metrics (`metrics`), one JSON audit event per decision (`audit`), and
//! logging setup. Labels stay bounded (route, reason); tokens and keys are never recorded.
//! (Skeleton: the telemetry helper owns this directory.)

pub mod audit;
pub mod metrics;

use std::time::Duration;

use crate::decision::Decision;
use crate::input::CheckInput;

/// Everything a decision is reported to.
#[derive(Debug, Default)]
pub struct Telemetry {}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one decision: metrics, audit event, decision log line.
    pub fn decision(&self, _input: &CheckInput, _decision: &Decision, _elapsed: Duration) {}
}
