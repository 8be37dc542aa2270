{{- /*
Helpers of the coder/coder 1.20.0 stand-in: each renders what the real chart's helper of the
same job renders (enterprise-helm 1.20.0, templates/_common.tpl); the tests in
tests/integration/test_lab_charts.py cite the lines.
*/ -}}

{{- define "coderv120.name" -}}
{{- if hasKey .Values "cemanager" }}cemanager{{ else }}coderd{{ end -}}
{{- end -}}

{{- define "coderv120.image" -}}
{{- if hasKey .Values "cemanager" }}{{ .Values.cemanager.image | quote }}{{ else }}{{ .Values.coderd.image | quote }}{{ end -}}
{{- end -}}

{{- define "coderv120.logEnv" -}}
- name: HUMAN_LOG
  value: {{ .Values.logging.human | quote }}
- name: JSON_LOG
  value: {{ .Values.logging.json | quote }}
- name: STACKDRIVER_LOG
  value: {{ .Values.logging.stackdriver | quote }}
{{- end -}}

{{- define "coderv120.splunkEnv" -}}
- name: SPLUNK_URL
  value: {{ .Values.logging.splunk.url | quote }}
- name: SPLUNK_TOKEN
  value: {{ .Values.logging.splunk.token | quote }}
- name: SPLUNK_CHANNEL
  value: {{ .Values.logging.splunk.channel | quote }}
{{- end -}}

{{- define "coderv120.postgresEnv" -}}
{{- if eq .Values.postgres.useDefault true -}}
- name: DB_HOST
  value: timescale.{{ .Release.Namespace }}{{ .Values.clusterDomainSuffix }}
- name: DB_PORT
  value: "5432"
- name: DB_USER
  value: coder
- name: DB_NAME
  value: coder
- name: DB_SSL_MODE
  value: disable
{{- else -}}
- name: DB_HOST
  value: {{ .Values.postgres.host | quote }}
- name: DB_PORT
  value: {{ .Values.postgres.port | quote }}
- name: DB_USER
  value: {{ .Values.postgres.user | quote }}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgres.passwordSecret | quote }}
      key: password
- name: DB_SSL_MODE
  value: {{ .Values.postgres.sslMode | quote }}
- name: DB_NAME
  value: {{ .Values.postgres.database | quote }}
{{- end -}}
{{- end -}}

{{- define "coderv120.resources" -}}
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

{{- /* Only certs.secret is mounted by the shared helpers in 1.20.0. */ -}}
{{- define "coderv120.certMounts" -}}
{{- with .Values.certs.secret.name }}
volumeMounts:
  - name: {{ . | quote }}
    mountPath: /etc/ssl/certs/{{ $.Values.certs.secret.key }}
    subPath: {{ $.Values.certs.secret.key | quote }}
{{- end }}
{{- end -}}
{{- define "coderv120.certVolumes" -}}
{{- with .Values.certs.secret.name }}
volumes:
  - name: {{ . | quote }}
    secret:
      secretName: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "coderv120.placement" -}}
{{- with .Values.services.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceTolerations }}
tolerations:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "coderv120.annotationLines" -}}
{{- range $key, $value := .Values.deploymentAnnotations }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "coderv120.clusterAddress" -}}
{{- .Values.envproxy.clusterAddress | default (printf "https://kubernetes.default%s:443" .Values.clusterDomainSuffix) -}}
{{- end -}}

{{- define "coderv120.envproxyAccessURL" -}}
{{- if .Values.envproxy.accessURL -}}{{- .Values.envproxy.accessURL -}}
{{- else if .Values.ingress.host -}}{{ ternary "https://" "http://" (not (not .Values.ingress.tls.enable)) }}{{ .Values.ingress.host }}
{{- end -}}
{{- end -}}

{{- define "coderv120.managerAccessURL" -}}
{{- if hasKey .Values "cemanager" -}}
{{- .Values.cemanager.accessURL | default (printf "http://cemanager.%s%s:8080" .Release.Namespace .Values.clusterDomainSuffix) -}}
{{- else -}}
{{- .Values.coderd.accessURL | default (printf "http://coderd.%s%s:8080" .Release.Namespace .Values.clusterDomainSuffix) -}}
{{- end -}}
{{- end -}}

{{- define "coderv120.configMapEnv" -}}
{{- with .Values.environments.tolerations }}
- name: POD_TOLERATIONS
  value: {{ toJson . | b64enc | quote }}
{{- end }}
{{- with .Values.environments.nodeSelector }}
- name: POD_NODESELECTOR
  value: {{ toJson . | b64enc | quote }}
{{- end }}
{{- end -}}
