{{/* Chart name. */}}
{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: every object name of a release derives from it. */}}
{{- define "tandem.fullname" -}}
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

{{/* Full name with a suffix, kept within 63 characters: (list . "suffix"). */}}
{{- define "tandem.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "tandem.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{/* Name of cluster-scoped RBAC objects: unique across namespaces. */}}
{{- define "tandem.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "tandem.fullname" .) | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{/* The binary: router or tls-edge. */}}
{{- define "tandem.binary" -}}
{{- if eq .Values.tier "edge" -}}tls-edge{{- else -}}router{{- end -}}
{{- end -}}

{{- define "tandem.ingressClassName" -}}
{{- default (printf "tandem-%s" .Values.tier) .Values.ingressClass.name -}}
{{- end -}}

{{- define "tandem.controllerClass" -}}
{{- default (printf "tandem.dev/%s" (include "tandem.binary" .)) .Values.controllerClass -}}
{{- end -}}

{{- define "tandem.electionId" -}}
{{- default (include "tandem.fullname" .) .Values.electionId -}}
{{- end -}}

{{- define "tandem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tandem.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Whether this release may read Secrets. */}}
{{- define "tandem.secretsAccess" -}}
{{- if kindIs "invalid" .Values.rbac.secrets -}}
{{- if eq .Values.tier "edge" -}}true{{- end -}}
{{- else if .Values.rbac.secrets -}}true{{- end -}}
{{- end -}}

{{/* appProtocol of the Service's http port ("" = none). */}}
{{- define "tandem.httpAppProtocol" -}}
{{- if kindIs "invalid" .Values.service.httpAppProtocol -}}
{{- if eq .Values.tier "router" -}}kubernetes.io/h2c{{- end -}}
{{- else -}}
{{- .Values.service.httpAppProtocol -}}
{{- end -}}
{{- end -}}

{{- define "tandem.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add .Values.shutdown.delaySeconds .Values.shutdown.graceSeconds 10 -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{- define "tandem.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Pod selector labels. */}}
{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "tandem.binary" . }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "tandem.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tandem
{{- end -}}

{{/* Whether the publish Service is used. */}}
{{- define "tandem.publishService" -}}
{{- if and .Values.publishService.enabled .Values.service.enabled (not .Values.publishStatusAddresses) -}}true{{- end -}}
{{- end -}}

{{/* The Service is externally accessible (pkg/api/service ExternallyAccessible). */}}
{{- define "tandem.externallyAccessible" -}}
{{- $t := .Values.service.type -}}
{{- if or (eq $t "LoadBalancer") (eq $t "NodePort") (and (eq $t "ClusterIP") .Values.service.externalIPs) -}}true{{- end -}}
{{- end -}}

{{/* RBAC rules for the watched kinds (a ClusterRole, or a Role in watchNamespace). */}}
{{- define "tandem.watchRules" -}}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses/status"]
  verbs: ["update", "patch"]
- apiGroups: [""]
  resources: ["services", "endpoints"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- if include "tandem.secretsAccess" . }}
# tls-edge only. The binary watches only type kubernetes.io/tls (a field selector), which RBAC
# cannot express: this grants every Secret of the watched namespaces.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}
# Warning Events about rejected Ingresses/Secrets, created in the rejected object's namespace.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
