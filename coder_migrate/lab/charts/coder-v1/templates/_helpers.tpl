{{/* Pre-1.21 keys still honoured, as the real chart's _migrate.tpl does. */}}
{{- define "coder.devurlsHost" -}}
{{- if .Values.coderd.devurlsHost -}}{{ .Values.coderd.devurlsHost }}{{- else if and .Values.devurls .Values.devurls.host -}}{{ .Values.devurls.host }}{{- end -}}
{{- end -}}
{{- define "coder.serviceType" -}}
{{- if .Values.serviceType -}}{{ .Values.serviceType }}{{- else -}}{{ .Values.services.type }}{{- end -}}
{{- end -}}
{{- define "coder.hostSecretName" -}}
{{- if .Values.coderd.tls.hostSecretName -}}{{ .Values.coderd.tls.hostSecretName }}{{- else if and .Values.ingress .Values.ingress.tls .Values.ingress.tls.hostSecretName -}}{{ .Values.ingress.tls.hostSecretName }}{{- end -}}
{{- end -}}
{{- define "coder.devurlsHostSecretName" -}}
{{- if .Values.coderd.tls.devurlsHostSecretName -}}{{ .Values.coderd.tls.devurlsHostSecretName }}{{- else if and .Values.ingress .Values.ingress.tls .Values.ingress.tls.devurlsHostSecretName -}}{{ .Values.ingress.tls.devurlsHostSecretName }}{{- end -}}
{{- end -}}
{{- define "coder.postgresDefault" -}}
{{- if hasKey .Values.postgres "useDefault" -}}{{ .Values.postgres.useDefault }}{{- else -}}{{ .Values.postgres.default.enable }}{{- end -}}
{{- end -}}
{{/* The template only tests truthiness: any non-empty string, even "false", turns it on. */}}
{{- define "coder.satellite" -}}
{{- if .Values.coderd.satellite.enable -}}true{{- end -}}
{{- end -}}
{{- define "coder.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
