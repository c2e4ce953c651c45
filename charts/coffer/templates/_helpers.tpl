{{/* Chart name, truncated to a DNS label. */}}
{{- define "coffer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: <release>-<name>, or the release name alone when it already contains the chart name. */}}
{{- define "coffer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "coffer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "coffer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coffer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coffer.labels" -}}
helm.sh/chart: {{ include "coffer.chart" . }}
{{ include "coffer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: csi-provider
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "coffer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coffer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the HMAC key of object versions. */}}
{{- define "coffer.hmacSecretName" -}}
{{- if .Values.hmacKey.existingSecret }}
{{- .Values.hmacKey.existingSecret }}
{{- else }}
{{- printf "%s-hmac-key" (include "coffer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "true" when coffer gets an HMAC key file at all. */}}
{{- define "coffer.hmacEnabled" -}}
{{- if or .Values.hmacKey.existingSecret .Values.hmacKey.create }}true{{ end }}
{{- end }}

{{/* "true" when coffer reads the Kubernetes API (only the AWS backend's ServiceAccount/node lookups). */}}
{{- define "coffer.kubeApi" -}}
{{- if and .Values.aws.enabled .Values.aws.kubeApi }}true{{ end }}
{{- end }}

{{/* repository@digest when image.digest is set, else repository:tag (default appVersion). */}}
{{- define "coffer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
