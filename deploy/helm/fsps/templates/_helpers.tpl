{{/*
_helpers.tpl: names, labels, the image, the server list and the pieces of
pod spec every fsps pod shares (restricted pod security).
*/}}

{{/* The chart's name, cut to 40 characters. */}}
{{- define "fsps.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name every object starts with: <release>-fsps, or the release name
when it already contains the chart's name. 40 characters at most, so that
"<full>-server-headless" (and each pod's name) stays a 63-character DNS label.
*/}}
{{- define "fsps.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fsps.server.name" -}}{{ include "fsps.fullname" . }}-server{{- end -}}
{{- define "fsps.server.headless" -}}{{ include "fsps.fullname" . }}-server-headless{{- end -}}
{{/* The Job's name carries the release revision: an upgrade (new counts,
new options) starts a new Job instead of editing an immutable one. */}}
{{- define "fsps.worker.name" -}}{{ include "fsps.fullname" . }}-worker-r{{ .Release.Revision }}{{- end -}}

{{- define "fsps.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fsps.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "fsps.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fsps.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fsps
{{- end -}}

{{/* The labels that pick this release's pods (the NetworkPolicy allows
exactly these). */}}
{{- define "fsps.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fsps.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fsps.server.selectorLabels" -}}
{{ include "fsps.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "fsps.worker.selectorLabels" -}}
{{ include "fsps.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "fsps.serve.name" -}}{{ include "fsps.fullname" . }}-serve{{- end -}}

{{- define "fsps.serve.selectorLabels" -}}
{{ include "fsps.selectorLabels" . }}
app.kubernetes.io/component: serve
{{- end -}}

{{/* The auth Secret's key of fsps-serve's token: serve.tokenKey, or the
worker token's. */}}
{{- define "fsps.serve.tokenKey" -}}
{{- default .Values.auth.workerTokenKey .Values.serve.tokenKey -}}
{{- end -}}

{{- define "fsps.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/*
The servers' stable DNS names with the gRPC port, in index order, comma
separated: <sts>-<i>.<headless service>.<namespace>.svc.<domain>:<port>.
StatefulSet pods get these names from the headless Service.
*/}}
{{- define "fsps.serverAddresses" -}}
{{- $sts := include "fsps.server.name" . -}}
{{- $svc := include "fsps.server.headless" . -}}
{{- $list := list -}}
{{- range $i := until (int .Values.server.replicas) -}}
{{- $list = append $list (printf "%s-%d.%s.%s.svc.%s:%d" $sts $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.server.port)) -}}
{{- end -}}
{{- join "," $list -}}
{{- end -}}

{{/* Pod-level settings of every fsps pod: restricted pod security, no API
token, the chart's service account. */}}
{{- define "fsps.podSpecCommon" -}}
serviceAccountName: {{ include "fsps.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ int64 .Values.securityContext.runAsUser }}
  runAsGroup: {{ int64 .Values.securityContext.runAsGroup }}
  fsGroup: {{ int64 .Values.securityContext.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Container-level security of every fsps container. */}}
{{- define "fsps.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  privileged: false
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* Scheduling settings of a pod; argument: server or worker values. */}}
{{- define "fsps.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The relabeling of every scraped series (ServiceMonitor and PodMonitor
endpoints): release=<release name>, which the dashboard selects by, as the
Prometheus Operator already adds namespace, pod and job. */}}
{{- define "fsps.metricsRelabelings" -}}
relabelings:
  - targetLabel: release
    replacement: {{ .Release.Name | quote }}
    action: replace
{{- end -}}

{{/* Values the schema cannot relate to one another. */}}
{{- define "fsps.validate" -}}
{{- if le (mul (int64 .Values.server.terminationGracePeriodSeconds) 1000) (int64 .Values.server.graceMs) -}}
{{- fail (printf "server.terminationGracePeriodSeconds (%v s) must exceed server.graceMs (%v ms): the kubelet would kill servers before their graceful stop ends" .Values.server.terminationGracePeriodSeconds .Values.server.graceMs) -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.server.port)) -}}
{{- fail "metrics.port must differ from server.port" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if and .Values.metrics.dashboard.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.dashboard.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- if eq (int .Values.tls.healthPort) (int .Values.server.port) -}}
{{- fail "tls.healthPort must differ from server.port" -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.tls.healthPort) (int .Values.metrics.port)) -}}
{{- fail "tls.healthPort must differ from metrics.port" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name (an Issuer or ClusterIssuer that signs the certificates)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.enabled) -}}
{{- fail "tls.certManager.enabled needs tls.enabled" -}}
{{- end -}}
{{- include "fsps.serve.validate" . -}}
{{- end -}}

{{/* The serve values the schema cannot relate to one another (checked
only with serve.enabled). */}}
{{- define "fsps.serve.validate" -}}
{{- $s := .Values.serve -}}
{{- if $s.enabled -}}
{{- if and (eq $s.source "checkpoint") (not $s.checkpoint.claimName) -}}
{{- fail "serve.source checkpoint needs serve.checkpoint.claimName: an existing ReadOnlyMany or ReadWriteMany PersistentVolumeClaim holding the checkpoint files (the servers' own claims are one ReadWriteOnce claim per server pod)" -}}
{{- end -}}
{{- if $s.hpa.enabled -}}
{{- if gt (int $s.hpa.minReplicas) (int $s.hpa.maxReplicas) -}}
{{- fail (printf "serve.hpa.minReplicas (%v) must not exceed serve.hpa.maxReplicas (%v)" $s.hpa.minReplicas $s.hpa.maxReplicas) -}}
{{- end -}}
{{- if not (($s.resources).requests).cpu -}}
{{- fail "serve.hpa.enabled needs serve.resources.requests.cpu: the HPA scales on CPU use as a share of the request" -}}
{{- end -}}
{{- end -}}
{{- if $s.metrics -}}
{{- if not .Values.metrics.enabled -}}
{{- fail "serve.metrics needs metrics.enabled" -}}
{{- end -}}
{{- if eq (int .Values.metrics.port) (int $s.port) -}}
{{- fail "metrics.port must differ from serve.port" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.auth.enabled (eq $s.source "servers") (eq (include "fsps.serve.tokenKey" .) .Values.auth.adminTokenKey) -}}
{{- fail (printf "serve.tokenKey must not be the admin token's key (%s): fsps-serve only reads the model; give it a worker (or reader) token" .Values.auth.adminTokenKey) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
TLS and tokens. Secrets are mounted read-only under /etc/fsps: the TLS
files at /etc/fsps/tls, the tokens at /etc/fsps/auth. Mode 0440: the
kubelet makes such files group-owned by fsGroup, which the processes run
in, and fsps's token loader refuses files that other users can read.
*/}}
{{- define "fsps.tls.serverSecret" -}}
{{- default (printf "%s-server-tls" (include "fsps.fullname" .)) .Values.tls.secretName -}}
{{- end -}}
{{- define "fsps.tls.clientSecret" -}}
{{- default (printf "%s-client-tls" (include "fsps.fullname" .)) .Values.tls.clientSecretName -}}
{{- end -}}
{{- define "fsps.auth.secret" -}}
{{- default (printf "%s-auth" (include "fsps.fullname" .)) .Values.auth.secretName -}}
{{- end -}}

{{/* The servers' names a certificate must carry: each pod's stable DNS
name, and a wildcard under the headless Service for pods added later. */}}
{{- define "fsps.tls.dnsNames" -}}
{{- $sts := include "fsps.server.name" . -}}
{{- $svc := printf "%s.%s.svc.%s" (include "fsps.server.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- $list := list (printf "*.%s" $svc) -}}
{{- range $i := until (int .Values.server.replicas) -}}
{{- $list = append $list (printf "%s-%d.%s" $sts $i $svc) -}}
{{- end -}}
{{- with .Values.tls.serverName -}}
{{- $list = append $list . -}}
{{- end -}}
{{- join "," $list -}}
{{- end -}}

{{/* The server container's TLS and token variables. */}}
{{- define "fsps.server.securityEnv" -}}
{{- if .Values.tls.enabled }}
# TLS only on the gRPC port; the probes use the plaintext health port.
- name: FSPS_TLS_CERT
  value: /etc/fsps/tls/tls.crt
- name: FSPS_TLS_KEY
  value: /etc/fsps/tls/tls.key
{{- if .Values.tls.mutual }}
# Mutual TLS: only clients with a certificate of this CA connect.
- name: FSPS_TLS_CLIENT_CA
  value: /etc/fsps/tls/ca.crt
{{- end }}
- name: FSPS_HEALTH_LISTEN
  value: "0.0.0.0:{{ int .Values.tls.healthPort }}"
{{- end }}
{{- if .Values.auth.enabled }}
- name: FSPS_AUTH_TOKENS
  value: /etc/fsps/auth/tokens
{{- end }}
{{- end -}}

{{/* A TLS client's variables (workers, their init container, the helm
test pod): the CA, and with mutual TLS the client certificate. */}}
{{- define "fsps.client.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: FSPS_TLS_CA
  value: /etc/fsps/tls/ca.crt
{{- if .Values.tls.mutual }}
- name: FSPS_TLS_CERT
  value: /etc/fsps/tls/tls.crt
- name: FSPS_TLS_KEY
  value: /etc/fsps/tls/tls.key
{{- end }}
{{- with .Values.tls.serverName }}
- name: FSPS_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "fsps.tls.mount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/fsps/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The servers' TLS volume: their certificate, key and CA. */}}
{{- define "fsps.server.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "fsps.tls.serverSecret" . }}
    defaultMode: 288 # 0440: owner and group (fsGroup) read, others nothing
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end -}}

{{/* A client's TLS volume: with mutual TLS the client Secret (its own
certificate and key, and the CA); without, the CA alone from the servers'
Secret — never the servers' key. */}}
{{- define "fsps.client.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    {{- if .Values.tls.mutual }}
    secretName: {{ include "fsps.tls.clientSecret" . }}
    defaultMode: 288 # 0440: owner and group (fsGroup) read, others nothing
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
    {{- else }}
    secretName: {{ include "fsps.tls.serverSecret" . }}
    defaultMode: 288 # 0440: owner and group (fsGroup) read, others nothing
    items:
      - {key: ca.crt, path: ca.crt}
    {{- end }}
{{- end }}
{{- end -}}
