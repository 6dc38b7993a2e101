{{/*
Sidecar named templates: what a pod needs to run portcullis beside Envoy. They take the chart's
context: `.` in this chart, `.Subcharts.portcullis` in a parent chart that depends on it, e.g.

  spec:
    template:
      metadata:
        annotations:
          {{- include "portcullis.sidecar.podAnnotations" .Subcharts.portcullis | nindent 10 }}
      spec:
        containers:
          - name: app            # listens on 127.0.0.1:<ports.app>
            ...
          {{- include "portcullis.sidecar.containers" .Subcharts.portcullis | nindent 10 }}
        volumes:
          {{- include "portcullis.sidecar.volumes" .Subcharts.portcullis | nindent 10 }}
*/}}

{{/* The portcullis container. */}}
{{- define "portcullis.sidecar.portcullisContainer" -}}
- name: portcullis
  image: {{ include "portcullis.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [serve, --config, /etc/portcullis/config/portcullis.yaml]
  env:
    - name: PORTCULLIS_LOG
      value: {{ .Values.log.level | quote }}
    - name: PORTCULLIS_LOG_FORMAT
      value: {{ .Values.log.format | quote }}
    {{- if .Values.otlp.endpoint }}
    - name: POD_NAME
      valueFrom:
        fieldRef: {fieldPath: metadata.name}
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef: {fieldPath: metadata.namespace}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ .Values.otlp.endpoint | quote }}
    - name: OTEL_EXPORTER_OTLP_PROTOCOL
      value: {{ .Values.otlp.protocol | quote }}
    - name: OTEL_SERVICE_NAME
      value: {{ default (include "portcullis.fullname" .) .Values.otlp.serviceName | quote }}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
    {{- end }}
  ports:
    - name: authz-grpc
      containerPort: {{ int .Values.ports.grpc }}
      protocol: TCP
    - name: authz-admin
      containerPort: {{ int .Values.ports.admin }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /healthz, port: authz-admin}
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet: {path: /healthz, port: authz-admin}
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet: {path: /readyz, port: authz-admin}
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- include "portcullis.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    # The whole directory (never subPath): the kubelet's `..data` symlink swap then reaches
    # portcullis, which reloads the file.
    - name: portcullis-config
      mountPath: /etc/portcullis/config
      readOnly: true
    {{- if include "portcullis.secretName" . }}
    - name: portcullis-secrets
      mountPath: /etc/portcullis/secrets
      readOnly: true
    {{- end }}
    {{- if .Values.apiKeys.existingSecret }}
    - name: portcullis-api-keys
      mountPath: /etc/portcullis/api-keys
      readOnly: true
    {{- end }}
    {{- if .Values.revocation.redis.existingSecret }}
    - name: portcullis-redis
      mountPath: /etc/portcullis/redis
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The Envoy container: client traffic on ports.envoy, ext_authz to portcullis on loopback. */}}
{{- define "portcullis.sidecar.envoyContainer" -}}
- name: envoy
  image: {{ printf "%s:%s" .Values.envoy.image.repository .Values.envoy.image.tag | quote }}
  imagePullPolicy: {{ .Values.envoy.image.pullPolicy }}
  command: [envoy]
  args:
    - --config-path
    - /etc/envoy/envoy.yaml
    - --concurrency
    - {{ .Values.envoy.concurrency | quote }}
    - --log-level
    - {{ .Values.envoy.logLevel }}
    # No hot restart: no shared memory, a restart is the pod's.
    - --disable-hot-restart
  ports:
    - name: http
      containerPort: {{ int .Values.ports.envoy }}
      protocol: TCP
    - name: envoy-health
      containerPort: {{ int .Values.ports.envoyHealth }}
      protocol: TCP
  readinessProbe:
    httpGet: {path: /ready, port: envoy-health}
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    httpGet: {path: /ready, port: envoy-health}
    periodSeconds: 10
    failureThreshold: 6
  resources:
    {{- toYaml .Values.envoy.resources | nindent 4 }}
  securityContext:
    {{- include "portcullis.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: envoy-config
      mountPath: /etc/envoy
      readOnly: true
    - name: envoy-tmp
      mountPath: /tmp
{{- end -}}

{{/* Both containers, for a pod's `containers:` list. */}}
{{- define "portcullis.sidecar.containers" -}}
{{ include "portcullis.sidecar.envoyContainer" . }}
{{ include "portcullis.sidecar.portcullisContainer" . }}
{{- end -}}

{{/* The volumes both containers mount, for a pod's `volumes:` list. */}}
{{- define "portcullis.sidecar.volumes" -}}
- name: portcullis-config
  configMap:
    name: {{ include "portcullis.configMapName" . }}
{{- if include "portcullis.secretName" . }}
- name: portcullis-secrets
  secret:
    secretName: {{ include "portcullis.secretName" . }}
    defaultMode: 0444
{{- end }}
{{- if .Values.apiKeys.existingSecret }}
- name: portcullis-api-keys
  secret:
    secretName: {{ .Values.apiKeys.existingSecret }}
    defaultMode: 0444
{{- end }}
{{- if .Values.revocation.redis.existingSecret }}
- name: portcullis-redis
  secret:
    secretName: {{ .Values.revocation.redis.existingSecret }}
    defaultMode: 0444
{{- end }}
{{- if ne .Values.mode "istio" }}
- name: envoy-config
  configMap:
    name: {{ include "portcullis.envoyConfigMapName" . }}
- name: envoy-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}
{{- end -}}

{{/*
Pod annotations: Envoy's bootstrap cannot be reloaded, so its checksum rolls the pods; the
portcullis configuration's checksum only with `config.reload: rollout` (hot reload otherwise).
*/}}
{{- define "portcullis.sidecar.podAnnotations" -}}
{{- $lines := list -}}
{{- if and (ne .Values.mode "istio") (not .Values.envoy.existingConfigMap) -}}
{{- $lines = append $lines (printf "checksum/envoy: %s" (include "portcullis.envoyBootstrap" . | sha256sum)) -}}
{{- end -}}
{{- if and (eq .Values.config.reload "rollout") (not .Values.config.existingConfigMap) -}}
{{- $lines = append $lines (printf "checksum/portcullis-config: %s" (include "portcullis.config" . | sha256sum)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}
