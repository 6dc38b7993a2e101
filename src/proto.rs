//! Generated Envoy and Google types, included exactly once (`build.rs` writes one module tree).
//! Nothing outside `grpc/` uses them.
#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unreachable_pub,
    non_camel_case_types
)]

include!(concat!(env!("OUT_DIR"), "/envoy_api.rs"));
