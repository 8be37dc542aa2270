{{- define "coder.name" -}}coder{{- end -}}
{{- define "coder.selectorLabels" -}}
app.kubernetes.io/name: coder
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "coder.labels" -}}
{{ include "coder.selectorLabels" . }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
