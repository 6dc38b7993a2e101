//! Compiles the vendored Envoy protos (see `proto/README.md`) with a vendored `protoc`, so a
//! fresh machine needs no system protoc, and records the git commit for `--version`.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let mut prost_config = prost_build::Config::new();
    prost_config.protoc_executable(protoc);
    // A CheckRequest is about 1 KiB inline, and tonic's generated service and codec move it
    // through several futures before portcullis sees it: boxed, each move copies a pointer.
    prost_config.boxed(".envoy.service.auth.v3.CheckRequest.attributes");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("envoy_api.rs")
        .compile_with_config(
            prost_config,
            &[PathBuf::from(
                "proto/envoy/service/auth/v3/external_auth.proto",
            )],
            &[PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");

    let sha = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PORTCULLIS_GIT_SHA={sha}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    Ok(())
}
