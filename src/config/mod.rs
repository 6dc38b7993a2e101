//! Configuration: `raw` (serde types of `portcullis.yaml`, unknown keys rejected) is compiled by
//! `compile` into a checked `Config`, every error collected with file:line:column and its path
//! (`routes[2].require.scopes`); `reload` watches the file and swaps in new engines.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::authn::{AuthnSettings, IssuerConfig};
use crate::authz::Route;

/// A validated configuration, ready to build an `Engine` from.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub issuers: Vec<IssuerConfig>,
    pub authn: AuthnSettings,
    pub routes: Vec<Route>,
    pub response: ResponseSettings,
    pub readiness: Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub grpc_listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Response options (design.md "Response contract").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSettings {
    /// Remove the credential header before the request goes upstream (default on).
    pub strip_credentials: bool,
    /// 404 (default) or 403 when no route matches.
    pub no_route_status: u16,
}

impl Default for ResponseSettings {
    fn default() -> Self {
        Self {
            strip_credentials: true,
            no_route_status: 404,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `/readyz` fails until every issuer has keys (default on).
    pub require_keys: bool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { require_keys: true }
    }
}
