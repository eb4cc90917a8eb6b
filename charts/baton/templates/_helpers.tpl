{{/* Name of the chart, overridable. */}}
{{- define "baton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified name of the operator's objects. */}}
{{- define "baton.fullname" -}}
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

{{/* Labels on every object of the release. */}}
{{- define "baton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: baton
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of the operator's pods. */}}
{{- define "baton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "baton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "baton.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Operator image reference; a digest wins over a tag. */}}
{{- define "baton.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Demo agent image reference. */}}
{{- define "baton.demoAgents.image" -}}
{{- $img := .Values.demoAgents.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Demo agents: one StatefulSet per member letter, all behind one headless Service.
Pod <name>-<member>-<i> is member <member> of demo cluster <i>.
*/}}
{{- define "baton.demoAgents.podNames" -}}
{{- $d := .Values.demoAgents -}}
{{- $names := list -}}
{{- range $m := $d.members -}}
{{- range $i := until (int $d.clusters) -}}
{{- $names = append $names (printf "%s-%s-%d" $d.name $m $i) -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "baton.demoAgents.hosts" -}}
{{- $d := .Values.demoAgents -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list -}}
{{- range $m := $d.members -}}
{{- range $i := until (int $d.clusters) -}}
{{- $hosts = append $hosts (printf "%s-%s-%d.%s.%s.svc" $d.name $m $i $d.name $ns) -}}
{{- end -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/*
RBAC rules that depend on the watched namespaces are rendered by "baton.rbac.watchedRules": in a ClusterRole when every
namespace is watched, in a Role of the watched namespace otherwise.
*/}}
{{- define "baton.rbac.watchedRules" }}
  # Clusters and Meshes: read and watch them all. The controller writes neither spec nor
  # metadata (intents are acknowledged in status).
  - apiGroups: ["baton.dev"]
    resources: ["clusters", "meshes"]
    verbs: ["get", "list", "watch"]
  # Status is written with server-side apply, one field manager per controller.
  - apiGroups: ["baton.dev"]
    resources: ["clusters/status", "meshes/status"]
    verbs: ["get", "patch"]
  # An event for every step.
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create", "patch"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
  {{- with .Values.certificates.caSecretNames }}
  # The CA Secrets of spec.certificates, by name only: read on every pass of an object that
  # names one, and watched one by one (a metadata.name field selector, which resourceNames
  # allows); never listed in general, never written.
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: {{ toJson . }}
    verbs: ["get", "list", "watch"]
  {{- end }}
{{- end }}
