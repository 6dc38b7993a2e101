//! `CheckInput`: the transport-free view of one request, built by an adapter (`grpc/`, or the
//! HTTP ext_authz server) and read by the engine. It must never hold protobuf or tonic types.

use std::net::SocketAddr;

/// Request headers as Envoy forwards them: lower-case names, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// Builds the view; names are lower-cased (HTTP/2 and Envoy already do, HTTP/1 callers may not).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(mut name, value)| {
                    name.make_ascii_lowercase();
                    (name, value)
                })
                .collect(),
        )
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One request to decide on.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// HTTP method, upper case (`GET`).
    pub method: String,
    /// `:authority` / `host`, as sent.
    pub host: String,
    /// The request target as sent (`:path`): path plus query string, not yet normalized.
    pub path: String,
    pub headers: Headers,
    /// The downstream client address as Envoy saw it.
    pub source: Option<SocketAddr>,
    /// The peer certificate (URL-encoded PEM) when Envoy has `include_peer_certificate`.
    pub peer_certificate: Option<String>,
    /// The downstream peer's identity from its certificate (its URI SAN, such as a SPIFFE id,
    /// else its DNS SAN or subject), when Envoy sends it (`attributes.source.principal`).
    pub source_principal: Option<String>,
}

impl CheckInput {
    /// `x-request-id`, echoed in denial bodies and audit events.
    pub fn request_id(&self) -> Option<&str> {
        self.headers.get("x-request-id")
    }
}
