{{/*
Named helpers: every resource gets its name and app.kubernetes.io/* labels from here, so they stay consistent.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "tei-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name used as the prefix of every resource: fullnameOverride, or release-chart (once when equal). */}}
{{- define "tei-operator.fullname" -}}
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

{{/* chart label value: name-version. */}}
{{- define "tei-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods: never change them between releases (Deployment selectors are immutable). */}}
{{- define "tei-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tei-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every resource of the chart. */}}
{{- define "tei-operator.labels" -}}
helm.sh/chart: {{ include "tei-operator.chart" . }}
{{ include "tei-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: tei-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "tei-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tei-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "tei-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces watched, comma-separated (empty = cluster-wide), as TEI_OPERATOR_NAMESPACES expects. */}}
{{- define "tei-operator.watchNamespaces" -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}

{{/*
RBAC rules for what the operator does inside a watched namespace (or everywhere, in cluster-wide mode).
Least privilege: no Secrets (pods reference them; the operator never reads them), no delete on its own resources.
*/}}
{{- define "tei-operator.namespacedRules" -}}
# Its custom resources: read and watched; only their status is written (kopf runs event handlers only and writes
# no annotations or finalizers on them).
- apiGroups: ["tei-operator.io"]
  resources: ["embeddingservices", "rerankerservices"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tei-operator.io"]
  resources: ["embeddingservices/status", "rerankerservices/status"]
  verbs: ["get", "patch", "update"]
# Children carry ownerReferences with blockOwnerDeletion; clusters that enable the OwnerReferencesPermissionEnforcement
# admission plugin require update on the owner's finalizers for that.
- apiGroups: ["tei-operator.io"]
  resources: ["embeddingservices/finalizers", "rerankerservices/finalizers"]
  verbs: ["update"]
# The children it renders and applies with server-side apply, and the autoscaler's replica writes.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The optional NetworkPolicy of a service (spec.networkPolicy).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The managed model cache (spec.cache.managed): its PersistentVolumeClaim and the download Job that fills it.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# TEI pods: readiness and crash loops for status; pods/proxy for the built-in /metrics scrape through the API server.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/proxy"]
  verbs: ["get"]
# Events about scaling decisions and reconcile results.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/*
Cluster-scoped rules the operator needs in every mode: free GPU capacity on nodes, CRD discovery for kopf, and
namespace names: kopf lists and watches namespaces to resolve the ones it serves (with watchNamespaces it retries a
forbidden list for about half a minute, holding back its watches, before it falls back to the names it was given).
Namespaces reveal names and labels only, nothing inside them.
*/}}
{{- define "tei-operator.clusterScopedRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/* GPU prices as the operator reads them: type=dollars,type=dollars (sorted by type). */}}
{{- define "tei-operator.gpuPrices" -}}
{{- $parts := list -}}
{{- range $type, $price := .Values.operator.gpuPrices -}}
{{- $parts = append $parts (printf "%s=%v" $type $price) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}
