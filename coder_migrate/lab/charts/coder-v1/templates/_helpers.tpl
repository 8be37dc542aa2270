{{- /*
Helpers of the coder/coder 1.21.0 stand-in. Each one renders what the real chart's helper of
the same job renders (enterprise-helm 1.21.0, templates/_common.tpl, _migrate.tpl,
_functions.tpl); the tests in tests/integration/test_lab_charts.py cite the lines.
*/ -}}

{{- /* The Deployment and Service name: "cemanager" while the values still have that key. */ -}}
{{- define "coderv1.name" -}}
{{- if hasKey .Values "cemanager" }}cemanager{{ else }}coderd{{ end -}}
{{- end -}}

{{- /* The value at a dotted path as YAML, "" when a step is missing or empty (false counts). */ -}}
{{- define "coderv1.at" -}}
{{- $current := .values -}}
{{- $found := true -}}
{{- range $step := splitList "." .path -}}
{{- if $found -}}
{{- if kindIs "map" $current -}}{{- $current = index $current $step -}}{{- else -}}{{- $current = "" -}}{{- end -}}
{{- if and (not $current) (not (kindIs "bool" $current)) -}}{{- $found = false -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if $found -}}{{- toYaml $current -}}{{- end -}}
{{- end -}}

{{- /* A value that moved in 1.21 (_migrate.tpl): the old key, when set, still wins. */ -}}
{{- define "coderv1.moved" -}}
{{- $old := include "coderv1.at" (dict "values" .values "path" .old) -}}
{{- if ne $old "" -}}{{- $old -}}
{{- else -}}
{{- $new := include "coderv1.at" (dict "values" .values "path" .new) -}}
{{- if ne $new "" -}}{{- $new -}}{{- else if .default -}}{{- toYaml .default -}}{{- end -}}
{{- end -}}
{{- end -}}

{{- define "coderv1.devurlsHost" -}}
{{- include "coderv1.moved" (dict "values" .Values "new" "coderd.devurlsHost" "old" "devurls.host") -}}
{{- end -}}
{{- define "coderv1.hostSecret" -}}
{{- include "coderv1.moved" (dict "values" .Values "new" "coderd.tls.hostSecretName" "old" "ingress.tls.hostSecretName") -}}
{{- end -}}
{{- define "coderv1.devurlsSecret" -}}
{{- include "coderv1.moved" (dict "values" .Values "new" "coderd.tls.devurlsHostSecretName" "old" "ingress.tls.devurlsHostSecretName") -}}
{{- end -}}
{{- define "coderv1.domainSuffix" -}}
{{- include "coderv1.moved" (dict "values" .Values "new" "services.clusterDomainSuffix" "old" "clusterDomainSuffix") -}}
{{- end -}}
{{- define "coderv1.annotations" -}}
{{- include "coderv1.moved" (dict "values" .Values "new" "services.annotations" "old" "deploymentAnnotations") -}}
{{- end -}}
{{- define "coderv1.image" -}}
{{- include "coderv1.moved" (dict "values" .Values "new" "coderd.image" "old" "cemanager.image") -}}
{{- end -}}

{{- /* An `envproxy` or `ingress-nginx` Service in the namespace: the pre-1.21 install. */ -}}
{{- define "coderv1.hasNginx" -}}
{{- if or (lookup "v1" "Service" .Release.Namespace "ingress-nginx") (lookup "v1" "Service" .Release.Namespace "envproxy") }}true{{ else }}false{{ end -}}
{{- end -}}

{{- /* "true": the 1.21 shape (one `coderd` Service from coderd.serviceSpec, no envproxy). */ -}}
{{- define "coderv1.serviceNext" -}}
{{- $values := merge .Values dict -}}
{{- if eq (dig "coderd" "serviceNext" false $values) true }}true
{{- else if eq (dig "ingress" "useDefault" true $values) false }}false
{{- else if eq (include "coderv1.hasNginx" .) "false" }}true
{{- else }}false{{ end -}}
{{- end -}}

{{- /* The built-in nginx ingress of a pre-1.21 install, kept while serviceNext is off. */ -}}
{{- define "coderv1.legacyNginx" -}}
{{- $values := merge .Values dict -}}
{{- if and (eq (include "coderv1.hasNginx" .) "true") (not (dig "coderd" "serviceNext" false $values)) (dig "ingress" "enable" true $values) (dig "ingress" "useDefault" true $values) }}true{{ end -}}
{{- end -}}

{{- define "coderv1.clusterAddress" -}}
{{- $address := dig "envproxy" "clusterAddress" "" (merge .Values dict) -}}
{{- if $address }}{{ $address }}{{ else }}https://kubernetes.default{{ include "coderv1.domainSuffix" . }}:443{{ end -}}
{{- end -}}

{{- define "coderv1.logEnv" -}}
- name: HUMAN_LOG
  value: {{ .Values.logging.human | quote }}
- name: JSON_LOG
  value: {{ .Values.logging.json | quote }}
- name: STACKDRIVER_LOG
  value: {{ .Values.logging.stackdriver | quote }}
{{- end -}}

{{- define "coderv1.splunkEnv" -}}
- name: SPLUNK_URL
  value: {{ .Values.logging.splunk.url | quote }}
- name: SPLUNK_TOKEN
  value: {{ .Values.logging.splunk.token | quote }}
- name: SPLUNK_CHANNEL
  value: {{ .Values.logging.splunk.channel | quote }}
{{- end -}}

{{- /* The database: the in-cluster timescale, or the external one of postgres.*. */ -}}
{{- define "coderv1.postgresEnv" -}}
{{- if eq (include "coderv1.moved" (dict "values" .Values "new" "postgres.default.enable" "old" "postgres.useDefault" "default" true)) "true" -}}
- name: DB_HOST
  value: timescale.{{ .Release.Namespace }}{{ include "coderv1.domainSuffix" . }}
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

{{- /* requests/limits: cpu and memory only, as strings. */ -}}
{{- define "coderv1.resources" -}}
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

{{- /* The header is there with certs.secret.name or a host TLS secret, as in 1.21.0. */ -}}
{{- define "coderv1.volumeMounts" -}}
{{- $certs := dig "certs" "secret" "name" "" (merge .Values dict) -}}
{{- $host := include "coderv1.hostSecret" . -}}
{{- $devurls := include "coderv1.devurlsSecret" . -}}
{{- if or $certs $host }}
volumeMounts:
{{- end }}
{{- if $certs }}
  - name: {{ $certs | quote }}
    mountPath: /etc/ssl/certs/{{ .Values.certs.secret.key }}
    subPath: {{ .Values.certs.secret.key | quote }}
{{- end }}
{{- if $host }}
  - name: tls
    mountPath: /etc/ssl/certs/host
    readOnly: true
{{- end }}
{{- if $devurls }}
  - name: devurltls
    mountPath: /etc/ssl/certs/devurls
    readOnly: true
{{- end }}
{{- end -}}

{{- define "coderv1.volumes" -}}
{{- $certs := dig "certs" "secret" "name" "" (merge .Values dict) -}}
{{- $host := include "coderv1.hostSecret" . -}}
{{- $devurls := include "coderv1.devurlsSecret" . -}}
{{- if or $certs $host }}
volumes:
{{- end }}
{{- if $certs }}
  - name: {{ $certs | quote }}
    secret:
      secretName: {{ $certs | quote }}
{{- end }}
{{- if $host }}
  - name: tls
    secret:
      secretName: {{ $host }}
{{- end }}
{{- if $devurls }}
  - name: devurltls
    secret:
      secretName: {{ $devurls }}
{{- end }}
{{- end -}}

{{- define "coderv1.nodeSelectorAndTolerations" -}}
{{- with .Values.services.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- $tolerations := include "coderv1.moved" (dict "values" .Values "new" "services.tolerations" "old" "serviceTolerations") -}}
{{- if $tolerations }}
tolerations:
{{ $tolerations }}
{{- end }}
{{- end -}}

{{- define "coderv1.annotationLines" -}}
{{- range $key, $value := fromYaml (include "coderv1.annotations" .) }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- /* Where envproxy says it is reached: envproxy.accessURL, else http(s)://ingress.host. */ -}}
{{- define "coderv1.envproxyAccessURL" -}}
{{- $values := merge .Values dict -}}
{{- if dig "envproxy" "accessURL" "" $values -}}{{- .Values.envproxy.accessURL -}}
{{- else if dig "ingress" "host" "" $values -}}
{{- ternary "https://" "http://" (not (not (dig "ingress" "tls" "enable" false $values))) }}{{ .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{- /* Where envproxy reaches coderd: the access URL given, else the in-cluster Service. */ -}}
{{- define "coderv1.managerAccessURL" -}}
{{- $values := merge .Values dict -}}
{{- if .Values.cemanager -}}
{{- dig "cemanager" "accessURL" "" $values | default (printf "http://cemanager.%s%s:8080" .Release.Namespace (include "coderv1.domainSuffix" .)) -}}
{{- else -}}
{{- dig "coderd" "accessURL" "" $values | default (printf "http://coderd.%s%s:8080" .Release.Namespace (include "coderv1.domainSuffix" .)) -}}
{{- end -}}
{{- end -}}
