{{/*
Shared pieces of the PodMonitor and ServiceMonitor: which namespaces to look in, and relabelings that give every TEI
series a `tei_service` (the EmbeddingService/RerankerService name) and `tei_component` label, which the alerts and
the dashboard group by.
*/}}
{{- define "tei-operator.monitorNamespaceSelector" -}}
{{- if .Values.watchNamespaces }}
namespaceSelector:
  matchNames:
    {{- toYaml .Values.watchNamespaces | nindent 4 }}
{{- else }}
namespaceSelector:
  any: true
{{- end }}
{{- end -}}

{{- define "tei-operator.monitorRelabelings" -}}
relabelings:
  - sourceLabels: [{{ printf "__meta_kubernetes_pod_label_%s" (regexReplaceAll "[^a-zA-Z0-9_]" .Values.monitoring.teiServiceLabel "_") | quote }}]
    targetLabel: tei_service
  - sourceLabels: [{{ printf "__meta_kubernetes_pod_label_%s" (regexReplaceAll "[^a-zA-Z0-9_]" .Values.monitoring.teiComponentLabel "_") | quote }}]
    targetLabel: tei_component
{{- end -}}


{{/*
kube-state-metrics label matchers that pick the operator's Deployments, from monitoring.teiPodSelector (the same
labels sit on the Deployments): `app.kubernetes.io/managed-by: tei-operator` becomes
`label_app_kubernetes_io_managed_by="tei-operator"`. kube-state-metrics exports these labels on kube_deployment_labels
only for keys in its --metric-labels-allowlist.
*/}}
{{- define "tei-operator.ksmDeploymentMatchers" -}}
{{- $matchers := list -}}
{{- range $key, $value := .Values.monitoring.teiPodSelector -}}
{{- $matchers = append $matchers (printf "label_%s=%q" (regexReplaceAll "[^a-zA-Z0-9_]" $key "_") $value) -}}
{{- end -}}
{{- join ", " $matchers -}}
{{- end -}}
