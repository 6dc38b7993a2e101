{{/*
Names, labels and the rendered configuration. Every named template here takes the chart's own
context (`.` inside this chart, `.Subcharts.portcullis` from a parent chart).
*/}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "portcullis.configMapName" -}}
{{- default (printf "%s-config" (include "portcullis.fullname" .)) .Values.config.existingConfigMap -}}
{{- end -}}

{{- define "portcullis.envoyConfigMapName" -}}
{{- default (printf "%s-envoy" (include "portcullis.fullname" .)) .Values.envoy.existingConfigMap -}}
{{- end -}}

{{- define "portcullis.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.data -}}
{{- printf "%s-secrets" (include "portcullis.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where portcullis's gRPC listener binds: loopback beside Envoy, every address in istio mode. */}}
{{- define "portcullis.grpcListen" -}}
{{- if eq .Values.mode "istio" -}}
{{- printf "0.0.0.0:%d" (int .Values.ports.grpc) -}}
{{- else -}}
{{- printf "127.0.0.1:%d" (int .Values.ports.grpc) -}}
{{- end -}}
{{- end -}}

{{/*
The checks Helm can make before portcullis sees the file, in portcullis's own words where it has
them. values.schema.json already requires a route's name and match and an issuer's name, issuer
and audiences; `portcullis check-config` finds the rest when the pod starts (a reload keeps the
last good configuration, a first start fails its probes).
*/}}
{{- define "portcullis.validate" -}}
{{- if not .Values.config.existingConfigMap -}}
{{- $c := .Values.config -}}
{{- if not $c.routes -}}
{{- fail "config.routes: no routes: every request would be denied; list at least one route (docs/configuration.md, routes)" -}}
{{- end -}}
{{- range $i, $route := $c.routes -}}
{{- if and (not $route.allow) (not $route.require) -}}
{{- fail (printf "config.routes[%d]: say who may use this route: `allow: anonymous`, `allow: authenticated` (any valid token) or `require: {scopes: [...]}` (there is no implicit allow)" $i) -}}
{{- end -}}
{{- if and (ne (toString $route.allow) "anonymous") (not $c.issuers) -}}
{{- fail (printf "config.routes[%d]: this route needs a token, but no `issuers` are configured" $i) -}}
{{- end -}}
{{- end -}}
{{- range $i, $issuer := $c.issuers -}}
{{- $sources := list -}}
{{- range $field := list "jwks_uri" "discovery" "jwks_file" "shared_secret_file" -}}
{{- if index $issuer $field -}}{{- $sources = append $sources (printf "`%s`" $field) -}}{{- end -}}
{{- end -}}
{{- if not $sources -}}
{{- fail (printf "config.issuers[%d]: no key source: set exactly one of `jwks_uri`, `discovery: true`, `jwks_file` or `shared_secret_file`" $i) -}}
{{- end -}}
{{- if gt (len $sources) 1 -}}
{{- fail (printf "config.issuers[%d]: %s are all set: an issuer has exactly one key source" $i (join " and " $sources)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.mode "standalone") (not .Values.standalone.app.image.repository) -}}
{{- fail "standalone.app.image.repository: standalone mode needs the application's image" -}}
{{- end -}}
{{- if and (eq .Values.mode "standalone") (not .Values.standalone.app.image.tag) -}}
{{- fail "standalone.app.image.tag: name the application's image tag (never an implicit latest)" -}}
{{- end -}}
{{- if and .Values.revocation.redis.existingSecret (not .Values.revocation.redis.url) -}}
{{- fail "revocation.redis.url: name the Redis (the password comes from existingSecret)" -}}
{{- end -}}
{{- end -}}

{{/* The portcullis configuration (YAML) rendered from values. */}}
{{- define "portcullis.config" -}}
{{- include "portcullis.validate" . -}}
{{- $c := .Values.config -}}
{{- $server := deepCopy (default dict $c.server) -}}
{{- $_ := set $server "grpc_listen" (include "portcullis.grpcListen" .) -}}
{{- $_ := set $server "admin_listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) -}}
{{- $config := deepCopy (default dict $c.settings) -}}
{{- $_ := set $config "server" $server -}}
{{- if $c.issuers }}{{ $_ := set $config "issuers" $c.issuers }}{{ end -}}
{{- if $c.roles }}{{ $_ := set $config "roles" $c.roles }}{{ end -}}
{{- $_ := set $config "routes" $c.routes -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- $keys := dict "file" (printf "/etc/portcullis/api-keys/%s" .Values.apiKeys.key) -}}
{{- if .Values.apiKeys.header }}{{ $_ := set $keys "header" .Values.apiKeys.header }}{{ end -}}
{{- if .Values.apiKeys.env }}{{ $_ := set $keys "env" .Values.apiKeys.env }}{{ end -}}
{{- $_ := set $config "api_keys" $keys -}}
{{- end -}}
{{- $redis := .Values.revocation.redis -}}
{{- if $redis.url -}}
{{- $r := dict "url" $redis.url -}}
{{- if $redis.existingSecret }}{{ $_ := set $r "password_file" (printf "/etc/portcullis/redis/%s" $redis.key) }}{{ end -}}
{{- if $redis.channel }}{{ $_ := set $r "channel" $redis.channel }}{{ end -}}
{{- $_ := set $config "revocation" (dict "redis" $r) -}}
{{- end -}}
# portcullis configuration rendered by the portcullis Helm chart (docs/configuration.md).
{{ toYaml $config }}
{{- end -}}

{{/* The hardened container securityContext every container of the chart runs with. */}}
{{- define "portcullis.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.runAsUser }}
runAsGroup: {{ int .Values.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The pod securityContext of the chart's own pods. */}}
{{- define "portcullis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.runAsUser }}
runAsGroup: {{ int .Values.runAsGroup }}
fsGroup: {{ int .Values.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The labels that select the pods running portcullis (sidecar mode: the user's pods). */}}
{{- define "portcullis.podSelector" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- if not .Values.sidecar.podSelector -}}
{{- fail "sidecar.podSelector: the ServiceMonitor and the NetworkPolicy need the labels of the pods that include the sidecar" -}}
{{- end -}}
{{- toYaml .Values.sidecar.podSelector -}}
{{- else -}}
{{- include "portcullis.selectorLabels" . -}}
{{- end -}}
{{- end -}}
