{{/* The chart's name, overridable. */}}
{{- define "stillhouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: release + chart unless the release name already holds the chart's. */}}
{{- define "stillhouse.fullname" -}}
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

{{/* Labels every resource carries. */}}
{{- define "stillhouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "stillhouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stillhouse
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A student's resource name. Call with (dict "root" $ "student" $student). */}}
{{- define "stillhouse.studentName" -}}
{{- printf "%s-%s" (include "stillhouse.fullname" .root) .student.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels that select one student's pods. */}}
{{- define "stillhouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stillhouse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: student
stillhouse.io/student: {{ .student.name }}
{{- end -}}

{{/* All labels of one student's resources. */}}
{{- define "stillhouse.studentLabels" -}}
{{ include "stillhouse.labels" .root }}
app.kubernetes.io/component: student
stillhouse.io/student: {{ .student.name }}
{{- end -}}

{{/* A student's replicas: its own, else the chart default. */}}
{{- define "stillhouse.replicas" -}}
{{- if hasKey .student "replicas" -}}{{ .student.replicas }}{{- else -}}{{ .root.Values.replicas }}{{- end -}}
{{- end -}}

{{/* True when a student runs (or may scale to) more than one pod. */}}
{{- define "stillhouse.shared" -}}
{{- if or (gt (int (include "stillhouse.replicas" .)) 1) .root.Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/*
Rules values.schema.json cannot express, with the key to change in each message. Several replicas writing one
SQLite file on a shared volume would lose or split feedback (SQLite's locking does not hold across nodes), and
they need one volume they can all mount.
*/}}
{{- define "stillhouse.validate" -}}
{{- $names := list -}}
{{- range $student := .Values.students -}}
{{- if has $student.name $names -}}
{{- fail (printf "students: the name %q appears twice; give each student its own name" $student.name) -}}
{{- end -}}
{{- $names = append $names $student.name -}}
{{- $ctx := dict "root" $ "student" $student -}}
{{- if include "stillhouse.shared" $ctx -}}
{{- if not $.Values.feedback.url -}}
{{- fail (printf "students[%s]: %s replicas (or autoscaling) need feedback.url, a PostgreSQL database every replica shares; SQLite on a shared volume would lose or split feedback" $student.name (include "stillhouse.replicas" $ctx)) -}}
{{- end -}}
{{- if not (has "ReadWriteMany" $.Values.persistence.accessModes) -}}
{{- fail (printf "students[%s]: more than one replica needs persistence.accessModes [ReadWriteMany] (each pod appends its own audit log to the shared volume)" $student.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The serving config a student's pods read (/etc/stillhouse/serve.yaml). */}}
{{- define "stillhouse.serveConfig" -}}
{{- $config := deepCopy (default dict .student.config) -}}
{{- $auth := mergeOverwrite (default dict (get $config "auth")) (dict "enabled" .root.Values.auth.enabled "tokens_env" "STILLHOUSE_TOKEN_HASHES") -}}
{{- $audit := mergeOverwrite (default dict (get $config "audit")) (dict "key_env" "STILLHOUSE_AUDIT_KEY") -}}
{{- $feedback := default dict (get $config "feedback") -}}
{{- if .root.Values.feedback.url -}}
{{- $_ := set $feedback "url" .root.Values.feedback.url -}}
{{- else -}}
{{- $_ := set $feedback "path" "/var/lib/stillhouse/feedback.sqlite" -}}
{{- end -}}
{{- $_ := set $config "model" .student.model -}}
{{- $_ := set $config "auth" $auth -}}
{{- $_ := set $config "audit" $audit -}}
{{- $_ := set $config "feedback" $feedback -}}
{{- if .root.Values.featureStore.enabled -}}
{{- $_ := set $config "features_repo" "/etc/stillhouse/feast" -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The Feast client config of students that look features up: SQL registry, Redis online store. Passwords come
from the environment (Feast expands ${VAR} in feature_store.yaml), never from the ConfigMap. */}}
{{- define "stillhouse.featureStoreConfig" -}}
{{- $fs := .root.Values.featureStore -}}
{{- $registry := $fs.registry -}}
{{- if $fs.registryPasswordSecret.name -}}
{{- $registry = regexReplaceAll "^([^:]+://[^@]+)@" $fs.registry "${1}:$${FEAST_REGISTRY_PASSWORD}@" -}}
{{- end -}}
{{- $redis := $fs.redis.connectionString -}}
{{- if $fs.redis.passwordSecret.name -}}
{{- $redis = printf "%s,password=${REDIS_PASSWORD}" $redis -}}
{{- end -}}
project: {{ $fs.project }}
provider: local
registry:
  registry_type: sql
  path: {{ $registry | quote }}
  cache_ttl_seconds: 60
online_store:
  type: redis
  connection_string: {{ $redis | quote }}
entity_key_serialization_version: 3
{{- end -}}
