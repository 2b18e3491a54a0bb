{{/* Names: <release>-shadowgate, or the release name when it already holds the chart name
     (`helm install shadowgate` gives `shadowgate`, the name every example uses). */}}
{{- define "shadowgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shadowgate.fullname" -}}
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

{{- define "shadowgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shadowgate.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shadowgate.selector" -}}
app.kubernetes.io/name: {{ include "shadowgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shadowgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shadowgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shadowgate.tokenSecret" -}}
{{- default (printf "%s-token" (include "shadowgate.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "shadowgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A ConfigMap of the golden set is made by the chart (example set or binaryData from values). */}}
{{- define "shadowgate.goldenConfigMap" -}}
{{- if and (not .Values.golden.existingClaim) (not .Values.golden.existingConfigMap) (or .Values.golden.example .Values.golden.binaryData) -}}
true
{{- end -}}
{{- end -}}

{{/* The store is PostgreSQL (shared by replicas) when a URL or a Secret holding one is given. */}}
{{- define "shadowgate.postgresql" -}}
{{- if or .Values.store.postgresql.url .Values.store.postgresql.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{- define "shadowgate.storeSecret" -}}
{{- default (printf "%s-store" (include "shadowgate.fullname" .)) .Values.store.postgresql.existingSecret -}}
{{- end -}}

{{/* Pods: `replicas` with PostgreSQL; one with SQLite (a ReadWriteOnce volume, one process). */}}
{{- define "shadowgate.replicas" -}}
{{- if include "shadowgate.postgresql" . -}}
{{- .Values.replicas -}}
{{- else -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- fail "replicas > 1 needs store.postgresql (url or existingSecret): with SQLite one process owns the runs" -}}
{{- end -}}
1
{{- end -}}
{{- end -}}
