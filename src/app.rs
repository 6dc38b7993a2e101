//! (skeleton; owned by the app/telemetry helper)
