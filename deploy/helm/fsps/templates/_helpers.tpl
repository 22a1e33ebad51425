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
{{- end -}}
