//! The `portcullis` binary: CLI only. (Skeleton; owned by the app/telemetry helper.)
fn main() {}
