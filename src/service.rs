//! One check, whatever the transport: snapshot the engine, decide, record telemetry (metrics,
//! the audit event and, when tracing is on, the `portcullis.check` span), inside the `check`
//! span. With tracing off nothing about traces is built: the untraced path is the same code
//! as before tracing existed. The gRPC adapter ([`crate::grpc`]) and the HTTP
//! `ext_authz` adapter ([`crate::http`]) translate a request into a [`CheckInput`], call
//! [`CheckService::check`] and map the [`Decision`] back; neither decides or records anything
//! itself.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;

use crate::decision::Decision;
use crate::engine::SharedEngine;
use crate::input::CheckInput;
use crate::telemetry::Telemetry;

/// Decides checks against the current engine and records them.
#[derive(Debug, Clone)]
pub struct CheckService {
    engine: SharedEngine,
    telemetry: Arc<Telemetry>,
}

impl CheckService {
    pub fn new(engine: SharedEngine, telemetry: Arc<Telemetry>) -> Self {
        Self { engine, telemetry }
    }

    /// Decides one already-translated request and records it, in the `check` span.
    pub async fn check(&self, input: &CheckInput) -> Decision {
        self.check_answered(input, |decision| (decision, ()))
            .await
            .0
    }

    /// [`check`](Self::check) for an adapter whose answer can fail: `answer` builds the response
    /// before anything is recorded and returns the decision it actually answered, the one that
    /// is recorded (an allow it cannot send becomes an `Unavailable::Internal` refusal).
    pub async fn check_answered<R>(
        &self,
        input: &CheckInput,
        answer: impl FnOnce(Decision) -> (Decision, R),
    ) -> (Decision, R) {
        self.check_traced(input, None, answer).await
    }

    /// [`check_answered`](Self::check_answered) whose trace parent may come from the
    /// transport: `metadata` (the gRPC call's), read only when tracing is on, before the
    /// request's own headers.
    pub async fn check_traced<R>(
        &self,
        input: &CheckInput,
        metadata: Option<&(dyn Extractor + Sync)>,
        answer: impl FnOnce(Decision) -> (Decision, R),
    ) -> (Decision, R) {
        let span = tracing::debug_span!(
            "check",
            http.method = %input.method,
            request.id = input.request_id().unwrap_or(""),
        );
        match self.telemetry.tracing() {
            None => self.decide(input, answer, None).instrument(span).await,
            Some(tracing) => {
                let trace = tracing.start_check(metadata, input);
                // Current while the check runs, so a key fetch it starts is its child span.
                self.decide(input, answer, Some(&trace))
                    .instrument(span)
                    .with_context(trace.clone())
                    .await
            }
        }
    }

    async fn decide<R>(
        &self,
        input: &CheckInput,
        answer: impl FnOnce(Decision) -> (Decision, R),
        trace: Option<&opentelemetry::Context>,
    ) -> (Decision, R) {
        let started = Instant::now();
        // One snapshot per request: a reload mid-request cannot mix two configurations.
        let engine = self.engine.load_full();
        let (decision, response) = answer(engine.check(input).await);
        self.telemetry
            .decision_in_trace(input, &decision, started.elapsed(), trace);
        (decision, response)
    }

    /// Records a decision an adapter made without the engine (a request it could not
    /// translate), timed from `started`.
    pub fn record(&self, input: &CheckInput, decision: &Decision, started: Instant) {
        self.telemetry.decision(input, decision, started.elapsed());
    }
}
