{{- /*
Helpers of the coder-v2/coder stand-in: each renders what the real chart's helper of the same
job renders (coder/coder helm/libcoder/templates/_helpers.tpl, helm/coder/templates/_coder.tpl);
tests/integration/test_lab_charts.py cites the lines.
*/ -}}

{{- define "coderv2.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "coderv2.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coderv2.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "coderv2.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "coderv2.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "coderv2.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "coderv2.tls" -}}
{{- if .Values.coder.tls.secretNames }}true{{ else }}false{{ end -}}
{{- end -}}

{{- /* Is NAME in coder.env? The chart adds some variables only when the user did not. */ -}}
{{- define "coderv2.userSets" -}}
{{- $wanted := .name -}}
{{- range .env }}{{ if eq .name $wanted }}true{{ end }}{{ end -}}
{{- end -}}

{{- define "coderv2.env" -}}
{{- $user := .Values.coder.env | default list -}}
- name: CODER_HTTP_ADDRESS
  value: "0.0.0.0:8080"
{{- if not (include "coderv2.userSets" (dict "env" $user "name" "CODER_PROMETHEUS_ADDRESS")) }}
- name: CODER_PROMETHEUS_ADDRESS
  value: "0.0.0.0:2112"
{{- end }}
{{- if not (include "coderv2.userSets" (dict "env" $user "name" "CODER_PPROF_ADDRESS")) }}
- name: CODER_PPROF_ADDRESS
  value: "0.0.0.0:6060"
{{- end }}
{{- with .Values.provisionerDaemon.pskSecretName }}
- name: CODER_PROVISIONER_DAEMON_PSK
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: psk
{{- end }}
{{- if and .Values.coder.envUseClusterAccessURL (not (include "coderv2.userSets" (dict "env" $user "name" "CODER_ACCESS_URL"))) }}
- name: CODER_ACCESS_URL
  value: {{ printf "%s://coder.%s.svc.cluster.local" (ternary "https" "http" (eq (include "coderv2.tls" .) "true")) .Release.Namespace | quote }}
{{- end }}
- name: KUBE_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: CODER_DERP_SERVER_RELAY_URL
  value: "http://$(KUBE_POD_IP):8080"
{{- if not (include "coderv2.userSets" (dict "env" $user "name" "GOMEMLIMIT")) }}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end }}
{{- if eq (include "coderv2.tls" .) "true" }}
- name: CODER_TLS_ENABLE
  value: "true"
- name: CODER_TLS_ADDRESS
  value: "0.0.0.0:8443"
- name: CODER_TLS_CERT_FILE
  value: "{{ range $i, $name := .Values.coder.tls.secretNames }}{{ if $i }},{{ end }}/etc/ssl/certs/coder/{{ $name }}/tls.crt{{ end }}"
- name: CODER_TLS_KEY_FILE
  value: "{{ range $i, $name := .Values.coder.tls.secretNames }}{{ if $i }},{{ end }}/etc/ssl/certs/coder/{{ $name }}/tls.key{{ end }}"
{{- end }}
{{- with $user }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "coderv2.volumes" -}}
{{- $volumes := list -}}
{{- range .Values.coder.tls.secretNames -}}
{{- $volumes = append $volumes (dict "name" (printf "tls-%s" .) "secret" (dict "secretName" .)) -}}
{{- end -}}
{{- range .Values.coder.certs.secrets -}}
{{- $volumes = append $volumes (dict "name" (printf "ca-cert-%s" .name) "secret" (dict "secretName" .name)) -}}
{{- end -}}
{{- $all := concat $volumes (.Values.coder.volumes | default list) -}}
{{- if $all }}{{ toYaml $all }}{{ else }}[]{{ end -}}
{{- end -}}

{{- define "coderv2.volumeMounts" -}}
{{- $mounts := list -}}
{{- range .Values.coder.tls.secretNames -}}
{{- $mounts = append $mounts (dict "name" (printf "tls-%s" .) "mountPath" (printf "/etc/ssl/certs/coder/%s" .) "readOnly" true) -}}
{{- end -}}
{{- range .Values.coder.certs.secrets -}}
{{- $mounts = append $mounts (dict "name" (printf "ca-cert-%s" .name) "mountPath" (printf "/etc/ssl/certs/%s.crt" .name) "subPath" .key "readOnly" true) -}}
{{- end -}}
{{- $all := concat $mounts (.Values.coder.volumeMounts | default list) -}}
{{- if $all }}{{ toYaml $all }}{{ else }}[]{{ end -}}
{{- end -}}

{{- /* `*-suffix.example.com` is not a legal Ingress host: the suffix is dropped, as the chart does. */ -}}
{{- define "coderv2.ingressWildcardHost" -}}
{{- regexReplaceAll "\\*[^.]*(\\..*)" .Values.coder.ingress.wildcardHost "*${1}" -}}
{{- end -}}
