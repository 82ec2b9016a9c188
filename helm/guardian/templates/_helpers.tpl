{{/* Names and labels shared by every object of the chart. */}}
{{- define "guardian.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "guardian.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one service: pass (dict "root" $ "name" $name). */}}
{{- define "guardian.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "guardian.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Kafka connection and credentials: pass (dict "root" $ "secret" $secretName). */}}
{{- define "guardian.kafkaEnv" -}}
- name: GUARDIAN_KAFKA_BOOTSTRAP
  value: {{ .root.Values.kafka.bootstrap | quote }}
- name: GUARDIAN_TOPIC_PREFIX
  value: {{ .root.Values.kafka.topicPrefix | quote }}
- name: GUARDIAN_KAFKA_SECURITY_PROTOCOL
  value: {{ .root.Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "sasl" .root.Values.kafka.securityProtocol }}
- name: GUARDIAN_KAFKA_SASL_MECHANISM
  value: {{ .root.Values.kafka.saslMechanism | quote }}
- name: GUARDIAN_KAFKA_USERNAME_FILE
  value: /etc/guardian/secrets/kafka-username
- name: GUARDIAN_KAFKA_PASSWORD_FILE
  value: /etc/guardian/secrets/kafka-password
{{- end }}
{{- if .root.Values.kafka.caConfigMap }}
- name: GUARDIAN_KAFKA_CA
  value: /etc/guardian/kafka-ca/ca.crt
{{- end }}
{{- if .root.Values.schemaRegistry.url }}
- name: GUARDIAN_SCHEMA_REGISTRY_URL
  value: {{ .root.Values.schemaRegistry.url | quote }}
- name: GUARDIAN_WIRE_FORMAT
  value: {{ .root.Values.schemaRegistry.wireFormat | quote }}
{{- end }}
{{- end -}}

{{- define "guardian.databaseEnv" -}}
- name: GUARDIAN_DATABASE_URL_FILE
  value: /etc/guardian/secrets/database-url
{{- end -}}

{{- define "guardian.s3Env" -}}
{{- if .Values.s3.endpoint }}
- name: GUARDIAN_S3_ENDPOINT
  value: {{ .Values.s3.endpoint | quote }}
{{- end }}
- name: GUARDIAN_S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: GUARDIAN_MODEL_BUCKET
  value: {{ .Values.s3.modelBucket | quote }}
- name: GUARDIAN_ARCHIVE_BUCKET
  value: {{ .Values.s3.archiveBucket | quote }}
{{- if .Values.s3.secretName }}
- name: GUARDIAN_S3_ACCESS_KEY_FILE
  value: /etc/guardian/secrets/s3-access-key
- name: GUARDIAN_S3_SECRET_KEY_FILE
  value: /etc/guardian/secrets/s3-secret-key
{{- end }}
{{- end -}}


{{/* Secrets are files (a projected volume at /etc/guardian/secrets), never env values:
     pass (dict "root" $ "needs" $needs "kafkaSecret" $secret). */}}
{{- define "guardian.secretVolume" -}}
- name: secrets
  projected:
    defaultMode: 0400
    sources:
      {{- if and (has "kafka" .needs) (hasPrefix "sasl" .root.Values.kafka.securityProtocol) }}
      - secret:
          name: {{ .kafkaSecret | quote }}
          items:
            - {key: username, path: kafka-username}
            - {key: password, path: kafka-password}
      {{- end }}
      {{- if has "database" .needs }}
      - secret:
          name: {{ .root.Values.database.secretName | quote }}
          items:
            - {key: {{ .root.Values.database.secretKey | quote }}, path: database-url}
      {{- end }}
      {{- if and (has "s3" .needs) .root.Values.s3.secretName }}
      - secret:
          name: {{ .root.Values.s3.secretName | quote }}
          items:
            - {key: access-key, path: s3-access-key}
            - {key: secret-key, path: s3-secret-key}
      {{- end }}
{{- end -}}
