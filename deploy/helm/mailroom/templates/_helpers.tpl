{{/* Names, labels and the pieces every service's manifests share. */}}

{{- define "mailroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailroom.fullname" -}}
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

{{/* "<fullname>-<service>", for a dict with "root" and "name". */}}
{{- define "mailroom.component" -}}
{{- printf "%s-%s" (include "mailroom.fullname" .root | trunc 52 | trimSuffix "-") .name -}}
{{- end -}}

{{- define "mailroom.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mailroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mailroom
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one service, for a dict with "root" and "name". */}}
{{- define "mailroom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailroom.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "mailroom.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "mailroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mailroom.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* MAILROOM_DATABASE_URL of one service (dict "root" "name"): its own key, else the shared one. */}}
{{- define "mailroom.databaseUrlEnv" -}}
- name: MAILROOM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgres.existingSecret is required" .root.Values.postgres.existingSecret }}
      key: {{ default .root.Values.postgres.urlKey (index .root.Values.postgres.perServiceKeys .name) }}
{{- end -}}

{{/* The environment every process of the chart shares (dict "root" "name"). */}}
{{- define "mailroom.commonEnv" -}}
{{ include "mailroom.databaseUrlEnv" . }}
- name: MAILROOM_NATS_URL
  value: {{ .root.Values.nats.url | quote }}
- name: MAILROOM_NATS_REPLICAS
  value: {{ .root.Values.nats.streamReplicas | quote }}
- name: MAILROOM_LOG_LEVEL
  value: {{ .root.Values.log.level | quote }}
- name: MAILROOM_LOG_FORMAT
  value: {{ .root.Values.log.format | quote }}
{{- with .root.Values.tracing }}
{{- if ne .exporter "none" }}
- name: OTEL_TRACES_EXPORTER
  value: {{ .exporter | quote }}
{{- with .otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with .resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The environment of one service's own settings (dict "root" "name"). */}}
{{- define "mailroom.serviceEnv" -}}
{{- $v := .root.Values -}}
{{- $prefix := printf "MAILROOM_%s_" (upper .name) -}}
- name: {{ $prefix }}HOST
  value: "0.0.0.0"
- name: {{ $prefix }}PORT
  value: "8000"
{{- if or (eq .name "sender") (eq .name "domains") }}
- name: MAILROOM_AWS_REGION
  value: {{ $v.aws.region | quote }}
{{- with $v.aws.sesEndpointUrl }}
- name: MAILROOM_SES_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.aws.credentialsSecret.name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.aws.credentialsSecret.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.aws.credentialsSecret.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- if eq .name "api" }}
{{- with $v.api.operatorToken.existingSecret }}
- name: MAILROOM_API_OPERATOR_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.api.operatorToken.key }}
{{- end }}
{{- with $v.api.broadcast.unsubscribeSecret.existingSecret }}
- name: MAILROOM_API_UNSUBSCRIBE_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.api.broadcast.unsubscribeSecret.key }}
{{- end }}
{{- with $v.api.broadcast.publicUrl }}
- name: MAILROOM_API_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.api.broadcast.unsubscribeMailto }}
- name: MAILROOM_API_UNSUBSCRIBE_MAILTO
  value: {{ . | quote }}
{{- end }}
- name: MAILROOM_API_DEFAULT_RATE_LIMIT
  value: {{ int64 $v.api.limits.defaultRateLimit | quote }}
- name: MAILROOM_API_DEFAULT_RATE_BURST
  value: {{ int64 $v.api.limits.defaultRateBurst | quote }}
- name: MAILROOM_API_MAX_MESSAGE_BYTES
  value: {{ int64 $v.api.limits.maxMessageBytes | quote }}
- name: MAILROOM_API_MAX_BODY_BYTES
  value: {{ int64 $v.api.limits.maxBodyBytes | quote }}
- name: MAILROOM_API_TEMPLATE_WORKERS
  value: {{ int64 $v.api.templates.workers | quote }}
- name: MAILROOM_API_TEMPLATE_RENDER_TIMEOUT_SECONDS
  value: {{ $v.api.templates.renderTimeoutSeconds | toString | quote }}
- name: MAILROOM_API_TEMPLATE_WORKER_MEMORY_MB
  value: {{ int64 $v.api.templates.workerMemoryMb | quote }}
- name: MAILROOM_API_TEMPLATE_EXTRA_VARIABLES
  value: {{ $v.api.templates.extraVariables | quote }}
- name: MAILROOM_API_REPUTATION_GUARD
  value: {{ $v.api.reputationGuard.enabled | toString | quote }}
- name: MAILROOM_API_REPUTATION_BOUNCE_RATE
  value: {{ $v.api.reputationGuard.bounceRate | toString | quote }}
- name: MAILROOM_API_REPUTATION_COMPLAINT_RATE
  value: {{ $v.api.reputationGuard.complaintRate | toString | quote }}
- name: MAILROOM_API_REPUTATION_WINDOW_SENDS
  value: {{ int64 $v.api.reputationGuard.windowSends | quote }}
- name: MAILROOM_API_REPUTATION_WINDOW_DAYS
  value: {{ $v.api.reputationGuard.windowDays | toString | quote }}
- name: MAILROOM_API_REPUTATION_MIN_SENDS
  value: {{ int64 $v.api.reputationGuard.minSends | quote }}
- name: MAILROOM_API_REPUTATION_WARN_RATIO
  value: {{ $v.api.reputationGuard.warnRatio | toString | quote }}
{{- end }}
{{- if eq .name "events" }}
- name: MAILROOM_EVENTS_SNS_TOPIC_ARNS
  value: {{ join "," $v.events.snsTopicArns | quote }}
- name: MAILROOM_EVENTS_UNMATCHED_RETENTION_DAYS
  value: {{ $v.events.unmatchedRetentionDays | toString | quote }}
{{- end }}
{{- if eq .name "domains" }}
- name: MAILROOM_DOMAINS_DNS_NAMESERVERS
  value: {{ join "," $v.domains.dns.nameservers | quote }}
- name: MAILROOM_DOMAINS_DNS_PORT
  value: {{ int64 $v.domains.dns.port | quote }}
- name: MAILROOM_DOMAINS_DNS_TIMEOUT_SECONDS
  value: {{ $v.domains.dns.timeoutSeconds | toString | quote }}
- name: MAILROOM_DOMAINS_DNS_TRANSPORT
  value: {{ $v.domains.dns.transport | quote }}
- name: MAILROOM_DOMAINS_ALLOWED_REGIONS
  value: {{ join "," $v.domains.allowedRegions | quote }}
{{- end }}
{{- if eq .name "sender" }}
- name: MAILROOM_SENDER_CONFIGURATION_SET
  value: {{ $v.sender.configurationSet | quote }}
- name: MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET
  value: {{ $v.sender.broadcastConfigurationSet | quote }}
{{- with $v.sender.sesEventsTopicArn }}
- name: MAILROOM_SENDER_SES_EVENTS_TOPIC_ARN
  value: {{ . | quote }}
{{- end }}
- name: MAILROOM_SENDER_SEND_RATE_SHARE
  value: {{ $v.sender.sendRateShare | toString | quote }}
- name: MAILROOM_SENDER_TRANSACTIONAL_RESERVE
  value: {{ $v.sender.transactionalReserve | toString | quote }}
- name: MAILROOM_SENDER_DAILY_QUOTA_HOLD_SHARE
  value: {{ $v.sender.dailyQuotaHoldShare | toString | quote }}
{{- end }}
{{- if eq .name "webhooks" }}
- name: MAILROOM_WEBHOOKS_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "webhooks.secretKey.existingSecret is required" $v.webhooks.secretKey.existingSecret }}
      key: {{ $v.webhooks.secretKey.key }}
{{- with $v.webhooks.allowedCidrs }}
- name: MAILROOM_WEBHOOKS_ALLOWED_CIDRS
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := (index $v.services .name).env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
