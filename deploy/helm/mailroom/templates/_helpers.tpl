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

{{/* One env var's value from a chart value: a whole number without ".0" or an exponent, a list
comma-separated, anything else as text. */}}
{{- define "mailroom.envValue" -}}
{{- if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . }}{{ $items = append $items (include "mailroom.envValue" .) }}{{ end -}}
{{- join "," $items -}}
{{- else if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The variables of a dict name → chart value whose value is set (not null: null leaves the
service's own default); in name order. */}}
{{- define "mailroom.optionalEnv" -}}
{{- range $name, $value := . }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ include "mailroom.envValue" $value | quote }}
{{- end }}
{{- end }}
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
{{- include "mailroom.optionalEnv" (dict
  "MAILROOM_DB_POOL_TIMEOUT_SECONDS" .root.Values.postgres.poolTimeoutSeconds
  "MAILROOM_RETENTION_INTERVAL_SECONDS" .root.Values.retention.intervalSeconds
  "MAILROOM_INBOX_RETENTION_DAYS" .root.Values.retention.inboxDays
  "MAILROOM_METRICS_INTERVAL_SECONDS" .root.Values.metrics.intervalSeconds
) }}
{{- $name := .name }}
{{- with .root.Values.tracing }}
{{- if ne .exporter "none" }}
- name: OTEL_TRACES_EXPORTER
  value: {{ .exporter | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ default (printf "mailroom-%s" $name) (index .serviceNames $name) | quote }}
{{- if eq .exporter "otlp" }}
{{- with .otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .otlpProtocol | quote }}
{{- with .otlpCompression }}
- name: OTEL_EXPORTER_OTLP_COMPRESSION
  value: {{ . | quote }}
{{- end }}
{{- with .otlpHeaders.existingSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.root.Values.tracing.otlpHeaders.key }}
{{- end }}
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
{{- $pool := (index $v.services .name).dbPool | default dict }}
{{- include "mailroom.optionalEnv" (dict
  (printf "%sDB_POOL_MIN" $prefix) $pool.min
  (printf "%sDB_POOL_MAX" $prefix) $pool.max
) }}
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
{{- /* one process per pod: scale pods (the probes and /metrics see one process) */}}
- name: MAILROOM_API_PROCESSES
  value: "1"
{{- include "mailroom.optionalEnv" (dict
  "MAILROOM_API_OFFLOAD_THRESHOLD_BYTES" $v.api.limits.offloadThresholdBytes
  "MAILROOM_API_IDEMPOTENCY_TTL_SECONDS" $v.api.idempotency.ttlSeconds
  "MAILROOM_API_IDEMPOTENCY_PURGE_INTERVAL_SECONDS" $v.api.idempotency.purgeIntervalSeconds
  "MAILROOM_API_RPC_TIMEOUT_SECONDS" $v.api.rpcTimeoutSeconds
  "MAILROOM_API_KEY_CACHE_SECONDS" $v.api.keyCacheSeconds
  "MAILROOM_API_CONTENT_RETENTION_DAYS" $v.api.contentRetentionDays
  "MAILROOM_API_TENANT_REPUBLISH_INTERVAL_SECONDS" $v.api.tenantRepublishIntervalSeconds
  "MAILROOM_API_SOFT_BOUNCE_SUPPRESS_AFTER" $v.api.softBounceSuppressAfter
) }}
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
{{- include "mailroom.optionalEnv" (dict
  "MAILROOM_EVENTS_SNS_MAX_AGE_SECONDS" $v.events.snsMaxAgeSeconds
  "MAILROOM_EVENTS_SNS_MESSAGE_RETENTION_DAYS" $v.events.snsMessageRetentionDays
) }}
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
{{- include "mailroom.optionalEnv" (dict
  "MAILROOM_DOMAINS_VERIFICATION_TIMEOUT_HOURS" $v.domains.verificationTimeoutHours
  "MAILROOM_DOMAINS_DEFAULT_MAIL_FROM_SUBDOMAIN" $v.domains.defaultMailFromSubdomain
  "MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS" $v.domains.polling.intervalSeconds
  "MAILROOM_DOMAINS_FAST_PHASE_SECONDS" $v.domains.polling.fastPhaseSeconds
  "MAILROOM_DOMAINS_SLOW_POLL_INTERVAL_SECONDS" $v.domains.polling.slowIntervalSeconds
  "MAILROOM_DOMAINS_RECHECK_INTERVAL_SECONDS" $v.domains.polling.recheckIntervalSeconds
  "MAILROOM_DOMAINS_SCHEDULE_JITTER" $v.domains.polling.jitter
  "MAILROOM_DOMAINS_CHECK_BATCH_SIZE" $v.domains.polling.batchSize
  "MAILROOM_DOMAINS_CLAIM_LEASE_SECONDS" $v.domains.polling.claimLeaseSeconds
  "MAILROOM_DOMAINS_SES_TIMEOUT_SECONDS" $v.domains.ses.timeoutSeconds
  "MAILROOM_DOMAINS_CREATE_TIMEOUT_SECONDS" $v.domains.ses.createTimeoutSeconds
) }}
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
{{- include "mailroom.optionalEnv" (dict
  "MAILROOM_SENDER_DAILY_QUOTA_RECHECK_SECONDS" $v.sender.dailyQuotaRecheckSeconds
  "MAILROOM_SENDER_SEND_QUOTA_REFRESH_SECONDS" $v.sender.sendQuotaRefreshSeconds
  "MAILROOM_SENDER_SES_EVENT_DESTINATION_NAME" $v.sender.sesEventDestinationName
  "MAILROOM_SENDER_CONCURRENCY" $v.sender.concurrency
  "MAILROOM_SENDER_HELD_POLL_SECONDS" $v.sender.heldPollSeconds
  "MAILROOM_SENDER_DELIVERY_RETENTION_DAYS" $v.sender.deliveryRetentionDays
  "MAILROOM_SENDER_IN_DOUBT_SECONDS" $v.sender.inDoubt.seconds
  "MAILROOM_SENDER_IN_DOUBT_RECHECK_SECONDS" $v.sender.inDoubt.recheckSeconds
  "MAILROOM_SENDER_IN_DOUBT_GRACE_SECONDS" $v.sender.inDoubt.graceSeconds
  "MAILROOM_SENDER_SES_CONNECT_TIMEOUT_SECONDS" $v.sender.ses.connectTimeoutSeconds
  "MAILROOM_SENDER_SES_READ_TIMEOUT_SECONDS" $v.sender.ses.readTimeoutSeconds
  "MAILROOM_SENDER_SES_MAX_IDLE_SECONDS" $v.sender.ses.maxIdleSeconds
) }}
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
{{- include "mailroom.optionalEnv" (dict
  "MAILROOM_WEBHOOKS_DISABLE_AFTER_FAILING_DAYS" $v.webhooks.disableAfterFailingDays
  "MAILROOM_WEBHOOKS_SECRET_ROTATION_OVERLAP_HOURS" $v.webhooks.secretRotationOverlapHours
  "MAILROOM_WEBHOOKS_TIMEOUT_SECONDS" $v.webhooks.delivery.timeoutSeconds
  "MAILROOM_WEBHOOKS_MAX_ATTEMPTS" $v.webhooks.delivery.maxAttempts
  "MAILROOM_WEBHOOKS_RETRY_DELAYS_SECONDS" $v.webhooks.delivery.retryDelaysSeconds
  "MAILROOM_WEBHOOKS_MAX_RETRY_AFTER_SECONDS" $v.webhooks.delivery.maxRetryAfterSeconds
  "MAILROOM_WEBHOOKS_CONCURRENCY" $v.webhooks.delivery.concurrency
  "MAILROOM_WEBHOOKS_PER_ENDPOINT_CONCURRENCY" $v.webhooks.delivery.perEndpointConcurrency
  "MAILROOM_WEBHOOKS_POLL_INTERVAL_SECONDS" $v.webhooks.delivery.pollIntervalSeconds
  "MAILROOM_WEBHOOKS_SUMMARY_RETRY_SECONDS" $v.webhooks.summary.retrySeconds
  "MAILROOM_WEBHOOKS_SUMMARY_WAIT_ATTEMPTS" $v.webhooks.summary.waitAttempts
  "MAILROOM_WEBHOOKS_SUMMARY_RETENTION_DAYS" $v.webhooks.retention.summaryDays
  "MAILROOM_WEBHOOKS_DELIVERY_RETENTION_DAYS" $v.webhooks.retention.deliveryDays
) }}
{{- end }}
{{- end -}}

{{/* services.<svc>.env (dict "root" "name"): refused for a variable the chart sets itself (through
a named value, or fixed), which would otherwise appear twice with the last one silently winning. */}}
{{- define "mailroom.extraEnv" -}}
{{- $set := dict -}}
{{- range (printf "%s\n%s" (include "mailroom.commonEnv" .) (include "mailroom.serviceEnv" .) | fromYamlArray) }}
{{- $_ := set $set .name true }}
{{- end }}
{{- range $key, $value := (index .root.Values.services .name).env }}
{{- if hasKey $set $key }}
{{- fail (printf "services.%s.env.%s: the chart sets %s itself (a named value in values.yaml, or fixed)" $.name $key $key) }}
{{- end }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
