//! `CheckRequest` → `CheckInput`, translated once, here and nowhere else.

use std::net::{IpAddr, SocketAddr};

use crate::input::{CheckInput, Headers};
use crate::proto::envoy::config::core::v3 as core;
use crate::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest, attribute_context};

/// Why a `CheckRequest` cannot be decided on. Envoy always sends the HTTP attributes; anything
/// else is a client bug, answered as `INVALID_ARGUMENT` (a gRPC error, not a decision).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCheckRequest {
    #[error("CheckRequest has no attributes.request.http")]
    MissingHttpAttributes,
}

impl TryFrom<CheckRequest> for CheckInput {
    type Error = InvalidCheckRequest;

    fn try_from(request: CheckRequest) -> Result<Self, Self::Error> {
        let AttributeContext {
            source,
            destination: _,
            request,
            context_extensions: _,
            metadata_context: _,
            route_metadata_context: _,
            tls_session: _,
        } = *request.attributes.unwrap_or_default();
        let http = request
            .and_then(|r| r.http)
            .ok_or(InvalidCheckRequest::MissingHttpAttributes)?;
        let attribute_context::HttpRequest {
            id: _,
            method,
            headers,
            header_map,
            path,
            host,
            scheme: _,
            query: _,
            fragment: _,
            size: _,
            protocol: _,
            body: _,
            raw_body: _,
        } = http;

        // With `encode_raw_headers` Envoy sends `header_map` (repeated names kept apart)
        // instead of the merged `headers` map.
        let headers = match header_map {
            Some(core::HeaderMap { headers: raw }) if !raw.is_empty() => {
                Headers::new(raw.into_iter().map(|h| {
                    let value = if h.raw_value.is_empty() {
                        h.value
                    } else {
                        // Valid UTF-8 (every header we read) is taken over without a copy.
                        String::from_utf8(h.raw_value).unwrap_or_else(|invalid| {
                            String::from_utf8_lossy(invalid.as_bytes()).into_owned()
                        })
                    };
                    (h.key, value)
                }))
            }
            _ => Headers::new(headers),
        };
        let (source, peer_certificate, source_principal) = match source {
            Some(peer) => (
                peer.address.as_ref().and_then(socket_addr),
                Some(peer.certificate).filter(|c| !c.is_empty()),
                // Envoy's own reading of the client certificate: its URI SAN (a SPIFFE id),
                // else its DNS SAN, else its subject; empty without mTLS.
                Some(peer.principal).filter(|p| !p.is_empty()),
            ),
            None => (None, None, None),
        };
        let mut method = method;
        method.make_ascii_uppercase();
        Ok(CheckInput {
            method,
            host,
            path,
            headers,
            source,
            peer_certificate,
            source_principal,
        })
    }
}

fn socket_addr(address: &core::Address) -> Option<SocketAddr> {
    let core::address::Address::SocketAddress(socket) = address.address.as_ref()? else {
        return None;
    };
    let ip: IpAddr = socket.address.parse().ok()?;
    let port = match socket.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(port)) => u16::try_from(port).ok()?,
        _ => 0,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};

    fn check_request(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(Box::new(AttributeContext {
                source: Some(Peer {
                    address: Some(core::Address {
                        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                            address: "10.1.2.3".into(),
                            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                                5555,
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn translates_method_path_host_headers_and_source() {
        let input = CheckInput::try_from(check_request(HttpRequest {
            method: "get".into(),
            path: "/documents/1?x=1".into(),
            host: "api.example.com".into(),
            headers: [("x-request-id".to_owned(), "abc".to_owned())].into(),
            ..Default::default()
        }))
        .expect("valid request");
        assert_eq!(input.method, "GET");
        assert_eq!(input.path, "/documents/1?x=1");
        assert_eq!(input.host, "api.example.com");
        assert_eq!(input.request_id(), Some("abc"));
        assert_eq!(input.source, Some("10.1.2.3:5555".parse().expect("addr")));
        assert_eq!(input.source_principal, None);
    }

    #[test]
    fn keeps_the_peers_principal_when_envoy_sends_one() {
        let mut request = check_request(HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            ..Default::default()
        });
        if let Some(peer) = request
            .attributes
            .as_mut()
            .and_then(|attributes| attributes.source.as_mut())
        {
            peer.principal = "spiffe://cluster.local/ns/web/sa/frontend".into();
        }
        let input = CheckInput::try_from(request).expect("valid request");
        assert_eq!(
            input.source_principal.as_deref(),
            Some("spiffe://cluster.local/ns/web/sa/frontend")
        );
    }

    #[test]
    fn raw_header_map_keeps_repeated_headers() {
        let raw = |k: &str, v: &str| core::HeaderValue {
            key: k.into(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        };
        let input = CheckInput::try_from(check_request(HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            header_map: Some(core::HeaderMap {
                headers: vec![raw("x-auth-subject", "a"), raw("x-auth-subject", "b")],
            }),
            ..Default::default()
        }))
        .expect("valid request");
        assert_eq!(input.headers.len(), 2);
    }

    #[test]
    fn request_without_http_attributes_is_invalid() {
        let err = CheckInput::try_from(CheckRequest::default()).expect_err("must fail");
        assert_eq!(err, InvalidCheckRequest::MissingHttpAttributes);
    }
}
