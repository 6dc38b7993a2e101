{{/*
The sidecar Envoy's bootstrap: deploy/envoy/envoy.yaml with the ports from values, plus a health
listener for the kubelet. The ext_authz filter and the `portcullis` cluster are what
`portcullis envoy-filter --mode grpc` prints for the rendered configuration (tests/helm.rs keeps
them equal).
*/}}
{{- define "portcullis.envoyBootstrap" -}}
# Envoy bootstrap rendered by the portcullis Helm chart from deploy/envoy/envoy.yaml.
#
#   client ──▶ :{{ int .Values.ports.envoy }} ──ext_authz (gRPC)──▶ portcullis 127.0.0.1:{{ int .Values.ports.grpc }}
#                  │ allowed
#                  ▼
#           application 127.0.0.1:{{ int .Values.ports.app }}
#
# Envoy admin on 127.0.0.1:{{ int .Values.ports.envoyAdmin }} only; GET /ready on :{{ int .Values.ports.envoyHealth }} for probes.

admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ int .Values.ports.envoyAdmin }}}

static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ int .Values.ports.envoy }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                # The sidecar is where client traffic enters: the TCP peer is the client
                # address portcullis sees (x-forwarded-for appended, x-envoy-external-address
                # set for non-internal peers); client-sent x-envoy-* headers are not trusted.
                use_remote_address: true
                # Envoy generates x-request-id when the client sent none; a caller's id is kept
                # so one request can be followed across services (it is a correlation id, not
                # a security boundary). portcullis puts it in every denial body.
                generate_request_id: true
                preserve_external_request_id: true
                # Route on, authorize and forward the same normalized path: what portcullis
                # decided on is what the application receives. portcullis still rejects
                # encoded slashes and dot segments itself (400).
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: KEEP_UNCHANGED
                # A client's `x_auth_subject` (or `X_AUTH_ROLES`, `x_user_email`) is answered 400:
                # WSGI, CGI and some proxies read it as the dashed name, i.e. as an identity
                # header. In the HTTP mode this is the only guard (Envoy sends portcullis exact
                # names only); in the gRPC mode portcullis removes such headers too.
                common_http_protocol_options:
                  headers_with_underscores_action: REJECT_REQUEST
                # traceparent/tracestate are ordinary headers here: Envoy passes them to
                # portcullis (all headers go into the CheckRequest) and to the application.
                access_log:
                  - name: envoy.access_loggers.stdout
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
                      log_format:
                        # REQ_WITHOUT_QUERY is an extension: it must be named here.
                        formatters:
                          - name: envoy.formatter.req_without_query
                            typed_config:
                              "@type": type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery
                        json_format:
                          time: "%START_TIME%"
                          method: "%REQ(:METHOD)%"
                          # Without the query: a client may put a token there (portcullis
                          # refuses it with 400, but the log line is written anyway).
                          path: "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                          status: "%RESPONSE_CODE%"
                          flags: "%RESPONSE_FLAGS%"
                          details: "%RESPONSE_CODE_DETAILS%"
                          duration_ms: "%DURATION%"
                          request_id: "%REQ(X-REQUEST-ID)%"
                          traceparent: "%REQ(TRACEPARENT)%"
                          client: "%DOWNSTREAM_REMOTE_ADDRESS%"
                          upstream: "%UPSTREAM_HOST%"
                          # {subject, method, route} as portcullis decided (allowed requests).
                          authz: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:portcullis)%"
                route_config:
                  name: local_app
                  # Some frameworks (IIS URL Rewrite, Symfony, Zend) route by these instead of
                  # the path portcullis authorized: a client must never choose them.
                  request_headers_to_remove: [x-original-url, x-rewrite-url]
                  virtual_hosts:
                    - name: app
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          route: {cluster: app, timeout: {{ .Values.envoy.routeTimeout }}}
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      # Fail closed: when portcullis cannot be reached or times out, the client
                      # gets 503 and the request never reaches the application.
                      failure_mode_allow: false
                      status_on_error: {code: ServiceUnavailable}
                      grpc_service:
                        envoy_grpc: {cluster_name: portcullis}
                        timeout: 0.5s
                      # No request body: portcullis decides on method, path and headers only.
                      # Repeated header names are sent apart (header_map), not merged.
                      encode_raw_headers: true
                      # The client certificate (when the listener terminates mTLS) reaches
                      # portcullis for certificate-bound policies.
                      include_peer_certificate: true
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

    # The kubelet's probe of Envoy: GET /ready only, answered by the admin interface (which
    # itself stays on loopback: it can stop Envoy and dump its configuration).
    - name: health
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ int .Values.ports.envoyHealth }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: health
                route_config:
                  name: health
                  virtual_hosts:
                    - name: health
                      domains: ["*"]
                      routes:
                        - match: {path: /ready, headers: [{name: ":method", string_match: {exact: GET}}]}
                          route: {cluster: envoy_admin, timeout: 2s}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

  clusters:
    - name: app
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: app
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ int .Values.ports.app }}}

    # portcullis: one long-lived HTTP/2 connection multiplexes every Check (a connection per
    # check costs a handshake per request). Keepalive pings find a dead peer quickly; the
    # idle timeout is long so the connection is not torn down between bursts.
    - name: portcullis
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          common_http_protocol_options:
            idle_timeout: 3600s
          explicit_http_config:
            http2_protocol_options:
              max_concurrent_streams: 1024
              connection_keepalive:
                interval: 30s
                timeout: 5s
      circuit_breakers:
        thresholds:
          - priority: DEFAULT
            max_connections: 16
            max_pending_requests: 4096
            max_requests: 4096
            max_retries: 3
      load_assignment:
        cluster_name: portcullis
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ int .Values.ports.grpc }}}

    - name: envoy_admin
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: envoy_admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ int .Values.ports.envoyAdmin }}}
{{- end -}}
