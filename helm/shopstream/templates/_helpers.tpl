{{/* The chart name, overridable. */}}
{{- define "shopstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart> (just the release when it already holds the chart name); max 40 characters
so that "-<component>" suffixes stay within 63. */}}
{{- define "shopstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shopstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The domain workers, in a fixed order. */}}
{{- define "shopstream.domains" -}}
users products orders payments
{{- end }}

{{/* The environment variable that holds a domain's gRPC address: users -> USER_SERVICE_ADDR. */}}
{{- define "shopstream.addrVar" -}}
{{- printf "%s_SERVICE_ADDR" (trimSuffix "s" . | upper) }}
{{- end }}

{{/* Labels. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "shopstream.labels" -}}
helm.sh/chart: {{ include "shopstream.chart" .root }}
{{ include "shopstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: shopstream
{{- end }}

{{- define "shopstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shopstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image, with a tag that is never empty nor "latest". */}}
{{- define "shopstream.image" -}}
{{- $tag := toString (default .Chart.AppVersion .Values.image.tag) }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must not be \"latest\": pin a version" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* Kafka bootstrap brokers as one comma-separated string. */}}
{{- define "shopstream.kafkaBrokers" -}}
{{- $b := .Values.kafka.brokers }}
{{- if kindIs "slice" $b }}{{ join "," $b }}{{ else }}{{ $b }}{{ end }}
{{- end }}

{{/* The Secret holding JWT_SECRET, INTERNAL_SECRET, DATABASE_URL and the OAuth client secrets. checkSecrets fails
early when neither the values nor an existing Secret provide them, or when an enabled OAuth
provider lacks its redirect URL or client secret. */}}
{{- define "shopstream.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "shopstream.fullname" .) }}
{{- end }}
{{- end }}

{{- define "shopstream.checkSecrets" -}}
{{- if not .Values.secrets.existingSecret }}
{{- $jwt := required "set secrets.jwtSecret (at least 32 characters) or secrets.existingSecret" .Values.secrets.jwtSecret }}
{{- if lt (len $jwt) 32 }}
{{- fail "secrets.jwtSecret must be at least 32 characters" }}
{{- end }}
{{- $internal := required "set secrets.internalSecret (at least 32 characters, e.g. openssl rand -hex 32) or secrets.existingSecret" .Values.secrets.internalSecret }}
{{- if lt (len $internal) 32 }}
{{- fail "secrets.internalSecret must be at least 32 characters" }}
{{- end }}
{{- $_ := required "set secrets.databaseUrl (postgresql://user:password@host:5432/db) or secrets.existingSecret" .Values.secrets.databaseUrl }}
{{- if include "shopstream.sandbox" . }}
{{- $sandbox := required "payments.provider is sandbox: set secrets.sandboxProviderSecret (at least 32 characters, e.g. openssl rand -hex 32) or secrets.existingSecret" .Values.secrets.sandboxProviderSecret }}
{{- if lt (len $sandbox) 32 }}
{{- fail "secrets.sandboxProviderSecret must be at least 32 characters" }}
{{- end }}
{{- end }}
{{- end }}
{{- include "shopstream.checkKafkaSecurity" . }}
{{- range $p := include "shopstream.enabledProviders" . | splitList " " | compact }}
{{- $_ := required (printf "oauth.%s.clientId is set: set oauth.%s.redirectUrl too (https://<host>/api/v1/oauth/%s/callback)" $p $p $p) (index $.Values.oauth $p).redirectUrl }}
{{- if not $.Values.secrets.existingSecret }}
{{- $_ := required (printf "oauth.%s.clientId is set: set secrets.oauth.%s.clientSecret too (or secrets.existingSecret)" $p $p) (index $.Values.secrets.oauth $p).clientSecret }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether payments go to the built-in sandbox provider, which needs its report-signing secret. */}}
{{- define "shopstream.sandbox" -}}
{{- if eq .Values.payments.provider "sandbox" }}true{{ end }}
{{- end }}

{{/* PUBLIC_URL: gateway.publicUrl, or the first ingress host that is not a wildcard (https when
ingress.tls lists it), or the gateway as kubectl port-forward reaches it. */}}
{{- define "shopstream.publicUrl" -}}
{{- $url := .Values.gateway.publicUrl }}
{{- if and (not $url) .Values.ingress.enabled }}
{{- $tlsHosts := list }}
{{- range .Values.ingress.tls }}
{{- $tlsHosts = concat $tlsHosts (.hosts | default list) }}
{{- end }}
{{- range .Values.ingress.hosts }}
{{- if and (not $url) .host (not (hasPrefix "*" .host)) }}
{{- $url = printf "%s://%s" (ternary "https" "http" (has .host $tlsHosts)) .host }}
{{- end }}
{{- end }}
{{- end }}
{{- default (printf "http://127.0.0.1:%v" .Values.gateway.port) $url | trimSuffix "/" }}
{{- end }}

{{/* The payment provider's settings, for the gateway (it serves the sandbox's hosted page and
signs its reports) and the payments worker (it opens sessions and checks reports). */}}
{{- define "shopstream.paymentsEnv" -}}
- name: PAYMENT_PROVIDER
  value: {{ .Values.payments.provider | quote }}
- name: PUBLIC_URL
  value: {{ include "shopstream.publicUrl" . | quote }}
{{- if include "shopstream.sandbox" . }}
- name: SANDBOX_PROVIDER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "shopstream.secretName" . }}
      key: {{ .Values.secrets.keys.sandboxProviderSecret }}
{{- end }}
{{- end }}

{{/* Kafka security: SASL needs a user and a password; TLS files only with a TLS protocol. */}}
{{- define "shopstream.checkKafkaSecurity" -}}
{{- $root := . }}
{{- $sec := .Values.kafka.security }}
{{- range $component := splitList " " (include "shopstream.kafkaClients" .) }}
{{- $own := index ($sec.principals | default dict) $component | default dict }}
{{- $p := include "shopstream.kafkaPrincipal" (dict "root" $root "component" $component) | fromYaml }}
{{- if include "shopstream.kafkaSasl" $root }}
{{- $_ := required (printf "kafka.security.protocol is %s: set kafka.security.sasl.username (or kafka.security.principals.%s.username)" $sec.protocol $component) $p.username }}
{{- if and $own.username (not $p.passwordSecret.name) }}
{{- fail (printf "kafka.security.principals.%s.username is set: set kafka.security.principals.%s.passwordSecret.name too" $component $component) }}
{{- end }}
{{- if not (or $p.passwordSecret.name $root.Values.secrets.existingSecret) }}
{{- $_ := required "set secrets.kafkaSaslPassword, kafka.security.sasl.passwordSecret.name or secrets.existingSecret" $root.Values.secrets.kafkaSaslPassword }}
{{- end }}
{{- else if or $p.username $p.passwordSecret.name }}
{{- fail "kafka.security.sasl is set: set kafka.security.protocol to SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and (not (include "shopstream.kafkaTls" $root)) (or $sec.tls.caSecret $p.clientSecret) }}
{{- fail "kafka.security.tls is set: set kafka.security.protocol to SSL or SASL_SSL" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Every process that talks to Kafka: the gateway, the workers and the hook job. */}}
{{- define "shopstream.kafkaClients" -}}
gateway {{ include "shopstream.domains" . }} migrate
{{- end }}

{{/* One process's Kafka principal, as YAML (username, passwordSecret, clientSecret): its entry
in kafka.security.principals, else the shared kafka.security.sasl and kafka.security.tls.
Call with (dict "root" $ "component" <name>). */}}
{{- define "shopstream.kafkaPrincipal" -}}
{{- $sec := .root.Values.kafka.security }}
{{- $own := index ($sec.principals | default dict) .component | default dict }}
{{- $ownPassword := $own.passwordSecret | default dict }}
{{- $password := $sec.sasl.passwordSecret }}
{{- if $ownPassword.name }}
{{- $password = dict "name" $ownPassword.name "key" ($ownPassword.key | default "password") }}
{{- end }}
{{- toYaml (dict "username" ($own.username | default $sec.sasl.username) "passwordSecret" $password "clientSecret" ($own.clientSecret | default $sec.tls.clientSecret)) }}
{{- end }}

{{- define "shopstream.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol }}true{{ end }}
{{- end }}

{{- define "shopstream.kafkaTls" -}}
{{- if hasSuffix "SSL" .Values.kafka.security.protocol }}true{{ end }}
{{- end }}

{{/* One process's Kafka credentials (see kafkaPrincipal): KAFKA_SASL_USERNAME and
KAFKA_SASL_PASSWORD (from its passwordSecret, else from the Secret named `secret`: the release's
or the hook's), and the paths of its client certificate. Call with
(dict "root" $ "component" <name> "secret" <name>). */}}
{{- define "shopstream.kafkaEnv" -}}
{{- $p := include "shopstream.kafkaPrincipal" . | fromYaml }}
{{- if include "shopstream.kafkaSasl" .root }}
- name: KAFKA_SASL_USERNAME
  value: {{ $p.username | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- if $p.passwordSecret.name }}
      name: {{ $p.passwordSecret.name }}
      key: {{ $p.passwordSecret.key }}
      {{- else }}
      name: {{ .secret }}
      key: {{ .root.Values.secrets.keys.kafkaSaslPassword }}
      {{- end }}
{{- end }}
{{- if and (include "shopstream.kafkaTls" .root) $p.clientSecret }}
{{- with .root.Values.kafka.security.tls }}
- name: KAFKA_SSL_CERTFILE
  value: {{ printf "/etc/shopstream/kafka-client/%s" .certKey | quote }}
- name: KAFKA_SSL_KEYFILE
  value: {{ printf "/etc/shopstream/kafka-client/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the release's own Secret holds KAFKA_SASL_PASSWORD. */}}
{{- define "shopstream.ownsKafkaPassword" -}}
{{- if and (include "shopstream.kafkaSasl" .) (not .Values.kafka.security.sasl.passwordSecret.name) }}true{{ end }}
{{- end }}

{{/* The OAuth providers the app knows, and those enabled here (their clientId is set). */}}
{{- define "shopstream.providers" -}}
google facebook github
{{- end }}

{{- define "shopstream.enabledProviders" -}}
{{- $enabled := list }}
{{- range $p := splitList " " (include "shopstream.providers" .) }}
{{- if (index $.Values.oauth $p).clientId }}
{{- $enabled = append $enabled $p }}
{{- end }}
{{- end }}
{{- join " " $enabled }}
{{- end }}

{{/* The chart's own Secret, as stringData: JWT_SECRET, INTERNAL_SECRET, DATABASE_URL, the
sandbox provider's secret and the client secret of each enabled OAuth provider. */}}
{{- define "shopstream.secretData" -}}
{{ .Values.secrets.keys.jwtSecret }}: {{ .Values.secrets.jwtSecret | quote }}
{{ .Values.secrets.keys.internalSecret }}: {{ .Values.secrets.internalSecret | quote }}
{{ .Values.secrets.keys.databaseUrl }}: {{ .Values.secrets.databaseUrl | quote }}
{{- if include "shopstream.sandbox" . }}
{{ .Values.secrets.keys.sandboxProviderSecret }}: {{ .Values.secrets.sandboxProviderSecret | quote }}
{{- end }}
{{- if include "shopstream.ownsKafkaPassword" . }}
{{ .Values.secrets.keys.kafkaSaslPassword }}: {{ .Values.secrets.kafkaSaslPassword | quote }}
{{- end }}
{{- range $p := include "shopstream.enabledProviders" . | splitList " " | compact }}
{{ (index $.Values.secrets.keys.oauth $p).clientSecret }}: {{ (index $.Values.secrets.oauth $p).clientSecret | quote }}
{{- end }}
{{- end }}

{{/* The non-secret environment, as a YAML map; the ConfigMap and the hook Job both use it. */}}
{{- define "shopstream.configData" -}}
{{- $root := . -}}
KAFKA_BROKER: {{ include "shopstream.kafkaBrokers" . | quote }}
KAFKA_FETCH_MAX_WAIT_MS: {{ .Values.kafka.fetchMaxWaitMs | toString | quote }}
KAFKA_REPLICATION_FACTOR: {{ .Values.kafka.topicReplicationFactor | int64 | toString | quote }}
KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.security.protocol | quote }}
{{- if include "shopstream.kafkaSasl" . }}
KAFKA_SASL_MECHANISM: {{ .Values.kafka.security.sasl.mechanism | quote }}
{{- end }}
{{- if and (include "shopstream.kafkaTls" .) .Values.kafka.security.tls.caSecret }}
KAFKA_SSL_CAFILE: {{ printf "/etc/shopstream/kafka-ca/%s" .Values.kafka.security.tls.caKey | quote }}
{{- end }}
LISTEN_HOST: {{ .Values.config.listenHost | quote }}
GATEWAY_PORT: {{ .Values.gateway.port | toString | quote }}
{{- range $domain := splitList " " (include "shopstream.domains" .) }}
{{ include "shopstream.addrVar" $domain }}: {{ printf "%s-%s:%v" (include "shopstream.fullname" $root) $domain (index $root.Values $domain).port | quote }}
{{- end }}
JWT_ISSUER: {{ .Values.config.jwtIssuer | quote }}
JWT_AUDIENCE: {{ .Values.config.jwtAudience | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
LOG_FORMAT: {{ .Values.config.logFormat | quote }}
SHOPSTREAM_STATE_DIR: {{ .Values.config.stateDir | quote }}
REQUEST_TIMEOUT_S: {{ .Values.config.requestTimeoutS | toString | quote }}
PYTHONUNBUFFERED: "1"
PYTHONDONTWRITEBYTECODE: "1"
HOME: "/tmp"
{{- end }}

{{/* What every long-running process gets from the Secret: DATABASE_URL and INTERNAL_SECRET
(service tokens and signed commands between the gateway and the workers). */}}
{{- define "shopstream.secretEnv" -}}
- name: INTERNAL_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "shopstream.secretName" . }}
      key: {{ .Values.secrets.keys.internalSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "shopstream.secretName" . }}
      key: {{ .Values.secrets.keys.databaseUrl }}
{{- end }}

{{/* JWT_SECRET from the Secret: only for the gateway (it checks access tokens) and the users
worker (it mints them). */}}
{{- define "shopstream.jwtEnv" -}}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "shopstream.secretName" . }}
      key: {{ .Values.secrets.keys.jwtSecret }}
{{- end }}

{{/* CORS_ORIGINS as one comma-separated string: gateway.cors.origins, or when that is empty and
the Ingress is on, the origin of every ingress host (https when ingress.tls lists it). Empty means
the app's default. Wildcard hosts are skipped: an Origin header never holds one. */}}
{{- define "shopstream.corsOrigins" -}}
{{- $origins := .Values.gateway.cors.origins | default list }}
{{- if and (not $origins) .Values.ingress.enabled }}
{{- $tlsHosts := list }}
{{- range .Values.ingress.tls }}
{{- $tlsHosts = concat $tlsHosts (.hosts | default list) }}
{{- end }}
{{- range .Values.ingress.hosts }}
{{- if and .host (not (hasPrefix "*" .host)) }}
{{- $origins = append $origins (printf "%s://%s" (ternary "https" "http" (has .host $tlsHosts)) .host) }}
{{- end }}
{{- end }}
{{- end }}
{{- join "," (uniq $origins) }}
{{- end }}

{{/* The users worker's own settings: token lifetimes, argon2id, and each enabled OAuth provider
(client id and redirect URL inline, client secret from the Secret). */}}
{{- define "shopstream.usersEnv" -}}
- name: ACCESS_TOKEN_TTL_S
  value: {{ .Values.auth.accessTokenTtlSeconds | int64 | toString | quote }}
- name: REFRESH_TOKEN_TTL_S
  value: {{ .Values.auth.refreshTokenTtlSeconds | int64 | toString | quote }}
- name: MAILER
  value: {{ .Values.auth.mailer | quote }}
- name: ARGON2_TIME_COST
  value: {{ .Values.auth.argon2.timeCost | int64 | toString | quote }}
- name: ARGON2_MEMORY_KIB
  value: {{ .Values.auth.argon2.memoryKiB | int64 | toString | quote }}
- name: ARGON2_PARALLELISM
  value: {{ .Values.auth.argon2.parallelism | int64 | toString | quote }}
{{- range $p := include "shopstream.enabledProviders" . | splitList " " | compact }}
{{- $up := upper $p }}
- name: {{ $up }}_CLIENT_ID
  value: {{ (index $.Values.oauth $p).clientId | quote }}
- name: {{ $up }}_REDIRECT_URL
  value: {{ (index $.Values.oauth $p).redirectUrl | quote }}
- name: {{ $up }}_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "shopstream.secretName" $ }}
      key: {{ (index $.Values.secrets.keys.oauth $p).clientSecret }}
{{- end }}
{{- end }}

{{/* The gateway's edge: CORS, trusted proxies (both only when set) and rate limits. */}}
{{- define "shopstream.gatewayEnv" -}}
{{- with include "shopstream.corsOrigins" . }}
- name: CORS_ORIGINS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.gateway.trustedProxies }}
- name: TRUSTED_PROXIES
  value: {{ join "," . | quote }}
{{- end }}
- name: RATE_LIMIT_USER_PER_MIN
  value: {{ .Values.gateway.rateLimits.userPerMinute | int64 | toString | quote }}
- name: RATE_LIMIT_IP_PER_MIN
  value: {{ .Values.gateway.rateLimits.ipPerMinute | int64 | toString | quote }}
- name: RATE_LIMIT_AUTH_PER_MIN
  value: {{ .Values.gateway.rateLimits.authPerMinute | int64 | toString | quote }}
{{- end }}

{{/* Pod-level settings shared by every pod. Call with
(dict "root" $ "c" <component values> "component" <name>). */}}
{{- define "shopstream.podCommon" -}}
{{- $root := .root -}}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $root.Values.scratch.tmpSizeLimit }}
  - name: state
    emptyDir:
      sizeLimit: {{ $root.Values.scratch.stateSizeLimit }}
{{- if include "shopstream.kafkaTls" $root }}
{{- with $root.Values.kafka.security.tls.caSecret }}
  - name: kafka-ca
    secret:
      secretName: {{ . }}
      defaultMode: 0440
{{- end }}
{{- with (include "shopstream.kafkaPrincipal" (dict "root" $root "component" .component) | fromYaml).clientSecret }}
  - name: kafka-client
    secret:
      secretName: {{ . }}
      defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/* Container-level settings shared by every container. Call with
(dict "root" $ "component" <name>). */}}
{{- define "shopstream.containerCommon" -}}
{{- $root := .root -}}
image: {{ include "shopstream.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: state
    mountPath: {{ $root.Values.config.stateDir }}
{{- if include "shopstream.kafkaTls" $root }}
{{- if $root.Values.kafka.security.tls.caSecret }}
  - name: kafka-ca
    mountPath: /etc/shopstream/kafka-ca
    readOnly: true
{{- end }}
{{- if (include "shopstream.kafkaPrincipal" . | fromYaml).clientSecret }}
  - name: kafka-client
    mountPath: /etc/shopstream/kafka-client
    readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* Rolls the pods when the configuration or the chart's Secret changes. */}}
{{- define "shopstream.checksums" -}}
checksum/config: {{ include "shopstream.configData" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secrets: {{ include "shopstream.secretData" . | sha256sum }}
{{- end }}
{{- end }}
