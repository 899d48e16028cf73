{{/* The chart's name, truncated to the 63 characters of a DNS label. */}}
{{- define "authgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's resources' name. */}}
{{- define "authgate.fullname" -}}
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

{{- define "authgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "authgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "authgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "authgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "authgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The store type: authgate's default is embedded. */}}
{{- define "authgate.storeType" -}}
{{- $store := .Values.config.store | default dict }}
{{- $store.type | default "embedded" }}
{{- end }}

{{/* Where the mounted Secrets' files go. */}}
{{- define "authgate.redisPasswordDir" -}}/run/secrets/authgate/redis{{- end }}
{{- define "authgate.signingKeysDir" -}}/run/secrets/authgate/keys{{- end }}
{{- define "authgate.stateDir" -}}/var/lib/authgate{{- end }}

{{/*
A duration of authgate's configuration ("500ms", "10s", "5m", "12h", "30d") in whole
seconds, rounded up. Anything else fails the render, naming the key.
Arguments: (list key value default)
*/}}
{{- define "authgate.seconds" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | default (index . 2) | toString }}
{{- if regexMatch "^[0-9]+ms$" $value }}
{{- div (add (trimSuffix "ms" $value | atoi) 999) 1000 }}
{{- else if regexMatch "^[0-9]+s$" $value }}
{{- trimSuffix "s" $value | atoi }}
{{- else if regexMatch "^[0-9]+m$" $value }}
{{- mul (trimSuffix "m" $value | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $value }}
{{- mul (trimSuffix "h" $value | atoi) 3600 }}
{{- else if regexMatch "^[0-9]+d$" $value }}
{{- mul (trimSuffix "d" $value | atoi) 86400 }}
{{- else }}
{{- fail (printf "authgate: config.%s %q is not a duration the chart can read (e.g. 500ms, 10s, 5m)" $key $value) }}
{{- end }}
{{- end }}

{{/*
authgate's configuration as the pod reads it: values.config with the keys the chart owns
(listeners, store path, secret files) set. Also the one place that refuses unsafe values.
*/}}
{{- define "authgate.config" -}}
{{- include "authgate.refuse" . }}
{{- $config := deepCopy .Values.config }}
{{- $server := get $config "server" | default dict }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.ports.data)) }}
{{- $_ := set $config "server" $server }}
{{- $admin := get $config "admin" | default dict }}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- $_ := set $config "admin" $admin }}
{{- $store := get $config "store" | default dict }}
{{- if eq (include "authgate.storeType" .) "embedded" }}
{{- $_ := set $store "type" "embedded" }}
{{- $_ := set $store "path" (printf "%s/authgate.db" (include "authgate.stateDir" .)) }}
{{- else if .Values.secrets.redisPassword.secretName }}
{{- $_ := set $store "password_file" (printf "%s/%s" (include "authgate.redisPasswordDir" .) .Values.secrets.redisPassword.key) }}
{{- end }}
{{- $_ := set $config "store" $store }}
{{- if .Values.secrets.signingKeys.secretName }}
{{- $mint := get $config "mint" | default dict }}
{{- $files := list }}
{{- range .Values.secrets.signingKeys.keys }}
{{- $files = append $files (printf "%s/%s" (include "authgate.signingKeysDir" $) .) }}
{{- end }}
{{- $_ := set $mint "key_files" $files }}
{{- $_ := set $config "mint" $mint }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Fails the render, with the reason, on values that would be unsafe. */}}
{{- define "authgate.refuse" -}}
{{- $store := include "authgate.storeType" . }}
{{- if and (eq $store "embedded") (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "authgate: replicaCount is %d but config.store.type is embedded: the embedded SQLite store belongs to one process. Set config.store.type: redis (with store.url) to run several replicas, or replicaCount: 1." (int .Values.replicaCount)) }}
{{- end }}
{{- if and (eq $store "embedded") .Values.autoscaling.enabled }}
{{- fail "authgate: autoscaling.enabled needs config.store.type: redis: the embedded SQLite store belongs to one process, and an autoscaler would start several." }}
{{- end }}
{{- if and (ne $store "embedded") .Values.persistence.existingClaim }}
{{- fail "authgate: persistence.existingClaim is for the embedded store only; with config.store.type: redis the state lives in Redis." }}
{{- end }}
{{- if not .Values.allowLiteralSecrets }}
{{- $storeConfig := .Values.config.store | default dict }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]+@" (toString ($storeConfig.url | default "")) }}
{{- fail "authgate: config.store.url holds a password, and config goes into a ConfigMap. Put the password in a Secret and name it in secrets.redisPassword (store.password_file), or set allowLiteralSecrets: true." }}
{{- end }}
{{- if hasKey $storeConfig "password" }}
{{- fail "authgate: config.store.password is a literal secret, and config goes into a ConfigMap. Use secrets.redisPassword, or set allowLiteralSecrets: true." }}
{{- end }}
{{- range $i, $provider := .Values.config.providers | default list }}
{{- range $key := list "password" "client_secret" }}
{{- if hasKey $provider $key }}
{{- fail (printf "authgate: config.providers[%d].%s is a literal secret, and config goes into a ConfigMap. Put it in an existing Secret, mount it with secrets.mounts and use %s_file, or set allowLiteralSecrets: true." $i $key $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $server := .Values.config.server | default dict }}
{{- $drain := include "authgate.seconds" (list "server.drain_delay" $server.drain_delay "5s") | int }}
{{- $shutdown := include "authgate.seconds" (list "server.shutdown_timeout" $server.shutdown_timeout "10s") | int }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $drain $shutdown) }}
{{- fail (printf "authgate: terminationGracePeriodSeconds (%d) must be longer than server.drain_delay + server.shutdown_timeout (%ds), or Kubernetes kills authgate before in-flight requests finish." (int .Values.terminationGracePeriodSeconds) (add $drain $shutdown)) }}
{{- end }}
{{- end }}
