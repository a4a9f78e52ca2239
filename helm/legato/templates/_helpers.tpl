{{/* Names, labels and the pieces every Legato pod shares. */}}

{{- define "legato.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix of every object name; short enough for "-<component>-<suffix>". */}}
{{- define "legato.fullname" -}}
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

{{- define "legato.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "legato.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: legato
{{- end -}}

{{/* Selector labels of a component: (dict "root" $ "component" "history") */}}
{{- define "legato.selectorLabels" -}}
app.kubernetes.io/name: {{ include "legato.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "legato.configMapName" -}}
{{- printf "%s-config" (include "legato.fullname" .) -}}
{{- end -}}

{{- define "legato.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "legato.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "legato.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "legato.zookeeperRoot" -}}
{{- default (printf "/legato/%s" .Release.Name) .Values.zookeeper.root -}}
{{- end -}}

{{/* "$(POD_IP):PORT" (IPv6: bracketed): where a process listens and what it registers in
ZooKeeper. Kubernetes expands $(POD_IP) in args from the container's env. (dict "root" $ "port" N) */}}
{{- define "legato.podAddress" -}}
{{- if eq .root.Values.podIPFamily "IPv6" -}}
{{- printf "[$(POD_IP)]:%d" (int .port) -}}
{{- else -}}
{{- printf "$(POD_IP):%d" (int .port) -}}
{{- end -}}
{{- end -}}

{{/* Where a process listens (dict "root" $ "port" N): every interface (listen: all; the pod IP is
then advertised with --advertise-host) or the pod IP alone (listen: podIP). */}}
{{- define "legato.listenAddress" -}}
{{- if eq .root.Values.listen "all" -}}
{{- if eq .root.Values.podIPFamily "IPv6" -}}
{{- printf "[::]:%d" (int .port) -}}
{{- else -}}
{{- printf "0.0.0.0:%d" (int .port) -}}
{{- end -}}
{{- else -}}
{{- include "legato.podAddress" . -}}
{{- end -}}
{{- end -}}

{{/* The host the other members reach this pod at: its IP (IPv6: bracketed). */}}
{{- define "legato.advertiseHost" -}}
{{- if eq .Values.podIPFamily "IPv6" -}}[$(POD_IP)]{{- else -}}$(POD_IP){{- end -}}
{{- end -}}

{{/* Paths inside the pods. */}}
{{- define "legato.configPath" -}}/etc/legato/legato.yaml{{- end -}}
{{- define "legato.tlsDir" -}}/etc/legato/tls{{- end -}}
{{- define "legato.tokenSecretDir" -}}/etc/legato/token-secret{{- end -}}
{{- define "legato.workerTlsDir" -}}/etc/legato/worker-tls{{- end -}}
{{- define "legato.workerTokenDir" -}}/etc/legato/worker-token{{- end -}}
{{- define "legato.appDir" -}}/etc/legato/app{{- end -}}

{{/* Legato's YAML config (legato/config.py): the sections of .Values.config with the chart's
settings on top. */}}
{{- define "legato.config" -}}
{{- $v := .Values -}}
{{- $c := deepCopy ($v.config | default dict) -}}
{{- $store := dict "kind" "cassandra" "cassandra_hosts" $v.cassandra.hosts "cassandra_port" $v.cassandra.port
      "cassandra_keyspace" $v.cassandra.keyspace "cassandra_local_dc" $v.cassandra.localDc
      "cassandra_consistency" $v.cassandra.consistency
      "cassandra_serial_consistency" $v.cassandra.serialConsistency -}}
{{- $queues := dict "kind" "kafka" "kafka_bootstrap" $v.kafka.bootstrap "topic_prefix" $v.kafka.topicPrefix
      "replication_factor" $v.kafka.replicationFactor "task_partitions" $v.kafka.taskPartitions
      "timer_partitions" $v.kafka.timerPartitions -}}
{{- $history := dict "num_shards" $v.numHistoryShards -}}
{{- $cluster := dict "zookeeper_hosts" (join "," $v.zookeeper.hosts) "zookeeper_root" (include "legato.zookeeperRoot" .)
      "zookeeper_session_timeout_ms" $v.zookeeper.sessionTimeoutMs -}}
{{- $security := dict -}}
{{- if $v.tls.enabled -}}
{{- $dir := include "legato.tlsDir" . -}}
{{- $_ := set $security "tls_cert_file" (printf "%s/%s" $dir $v.tls.certKey) -}}
{{- $_ := set $security "tls_key_file" (printf "%s/%s" $dir $v.tls.keyKey) -}}
{{- $_ := set $security "tls_ca_file" (printf "%s/%s" $dir $v.tls.caKey) -}}
{{- $_ := set $security "tls_client_auth" $v.tls.clientAuth -}}
{{- $_ := set $security "tls_server_name" $v.tls.serverName -}}
{{- end -}}
{{- if $v.tokens.enabled -}}
{{- $_ := set $security "token_secret_file" (printf "%s/%s" (include "legato.tokenSecretDir" .) $v.tokens.secretKey) -}}
{{- end -}}
{{- $_ := set $c "store" (mergeOverwrite (get $c "store" | default dict) $store) -}}
{{- $_ := set $c "queues" (mergeOverwrite (get $c "queues" | default dict) $queues) -}}
{{- $_ := set $c "history" (mergeOverwrite (get $c "history" | default dict) $history) -}}
{{- $_ := set $c "cluster" (mergeOverwrite (get $c "cluster" | default dict) $cluster) -}}
{{- if $security -}}
{{- $_ := set $c "security" (mergeOverwrite (get $c "security" | default dict) $security) -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Env of every Legato container: its pod IP (for $(POD_IP) in the args) and the log level. */}}
{{- define "legato.commonEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: LEGATO_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: HOME
  value: /tmp
{{- end -}}

{{/* Volumes of a server pod: the config, and the TLS and token Secrets when on. */}}
{{- define "legato.serverVolumes" -}}
- name: config
  configMap:
    name: {{ include "legato.configMapName" . }}
- name: tmp
  emptyDir: {}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.existingSecret is required with tls.enabled" .Values.tls.existingSecret }}
{{- end }}
{{- if .Values.tokens.enabled }}
- name: token-secret
  secret:
    secretName: {{ required "tokens.existingSecret is required with tokens.enabled" .Values.tokens.existingSecret }}
{{- end }}
{{- end -}}

{{- define "legato.serverVolumeMounts" -}}
- name: config
  mountPath: {{ include "legato.configPath" . }}
  subPath: legato.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "legato.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.tokens.enabled }}
- name: token-secret
  mountPath: {{ include "legato.tokenSecretDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Prometheus annotations of a pod. */}}
{{- define "legato.metricsAnnotations" -}}
{{- if .Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* The probes of a component: (dict "root" $ "values" .Values.history) */}}
{{- define "legato.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml .values.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml .values.readinessProbe | nindent 2 }}
{{- end -}}

{{/* Placement of a component's pods. */}}
{{- define "legato.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
