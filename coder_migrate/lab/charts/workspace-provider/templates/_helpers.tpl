{{- /*
Helpers of the coder/workspace-provider stand-in (cdr/enterprise-helm branch
workspace-providers-envproxy-only, templates/_common.tpl): the same required values and the
same fallbacks; tests/integration/test_lab_charts.py cites the lines.
*/ -}}

{{- define "wp.managerAccessURL" -}}
{{- .Values.cemanager.accessURL | required "cemanager.accessURL must be set" -}}
{{- end -}}

{{- define "wp.envproxyAccessURL" -}}
{{- if .Values.envproxy.accessURL -}}{{- .Values.envproxy.accessURL -}}
{{- else if .Values.ingress.host -}}{{ ternary "https://" "http://" (not (not .Values.ingress.tls.enable)) }}{{ .Values.ingress.host }}
{{- else -}}{{- fail "envproxy.accessURL or ingress.host must be set" -}}
{{- end -}}
{{- end -}}

{{- define "wp.clusterAddress" -}}
{{- .Values.envproxy.clusterAddress | required "envproxy.clusterAddress must be set" -}}
{{- end -}}

{{- define "wp.resources" -}}
{{- if . }}
resources:
{{- range $kind := list "requests" "limits" }}
{{- with index $ $kind }}
  {{ $kind }}:
{{- with .cpu }}
    cpu: {{ . | quote }}
{{- end }}
{{- with .memory }}
    memory: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
{{- end -}}
