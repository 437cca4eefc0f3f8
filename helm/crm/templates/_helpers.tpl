{{/* Chart name. */}}
{{- define "crm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name, at most 63 characters. */}}
{{- define "crm.fullname" -}}
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

{{/* Name of one service's resources. Context: dict "root" $ "name" <service>. */}}
{{- define "crm.componentName" -}}
{{- printf "%s-%s" (include "crm.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Environment variable prefix of a service: accounts-contacts -> CRM_ACCOUNTS_CONTACTS. */}}
{{- define "crm.envPrefix" -}}
{{- printf "CRM_%s" (. | replace "-" "_" | upper) }}
{{- end }}

{{- define "crm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "crm.labels" -}}
helm.sh/chart: {{ include "crm.chart" . }}
{{ include "crm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crm
{{- end }}

{{/* Labels shared by every resource of the release (ServiceMonitor selects on these). */}}
{{- define "crm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one service. Context: dict "root" $ "name" <service>. */}}
{{- define "crm.componentLabels" -}}
{{ include "crm.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "crm.componentSelectorLabels" -}}
{{ include "crm.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* Container image reference. */}}
{{- define "crm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "crm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret with the runtime keys (DATABASE_URL, AMQP_URL, REDIS_URL, CRM_KEY_ENCRYPTION_KEY). */}}
{{- define "crm.secretName" -}}
{{- default (include "crm.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Secret with CRM_DATABASE_ADMIN_URL and DATABASE_URL for the migration Job. */}}
{{- define "crm.migrationSecretName" -}}
{{- default (printf "%s-migrate" (include "crm.fullname" .) | trunc 63 | trimSuffix "-") .Values.secrets.existingSecret }}
{{- end }}

{{/* An env entry read from the chart's Secret. Context: dict "root" $ "key" <KEY> "secret" <name>. */}}
{{- define "crm.secretEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}
