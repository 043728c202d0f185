{{/* Names and labels. */}}
{{- define "portlb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "portlb.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portlb.labels" -}}
{{ include "portlb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "portlb.serviceAccountName" -}}
{{- default (include "portlb.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "portlb.image" -}}
{{- $img := index .root.Values.image .which -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* Where the agent finds a peer's MD5 password (a Secret mounted into the agent only). */}}
{{- define "portlb.peerSecretDir" -}}
{{- printf "/etc/portlb/peer-secrets/%d" . -}}
{{- end -}}

{{/*
The agent's configuration: the user's `config` plus what the chart decides itself.
*/}}
{{- define "portlb.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "mode" "kubernetes" -}}
{{- $ipvs := default (dict) $cfg.ipvs -}}
{{- $_ := set $ipvs "sysctlPath" "/host/proc/sys/net/ipv4/vs" -}}
{{- $_ := set $cfg "ipvs" $ipvs -}}
{{- if $cfg.bgp -}}
{{- $bgp := $cfg.bgp -}}
{{- $_ := set $bgp "speakerSocket" "unix:///run/portlb/gobgp.sock" -}}
{{- $peers := list -}}
{{- range $i, $p := ($bgp.peers | default list) -}}
{{- $peer := omit $p "passwordSecret" -}}
{{- if $p.passwordSecret -}}
{{- $_ := set $peer "passwordFile" (printf "%s/%s" (include "portlb.peerSecretDir" $i) $p.passwordSecret.key) -}}
{{- end -}}
{{- $peers = append $peers $peer -}}
{{- end -}}
{{- $_ := set $bgp "peers" $peers -}}
{{- end -}}
{{- if $cfg.bfd -}}
{{- $_ := set $cfg.bfd "socket" "/run/portlb/bird-bfd.ctl" -}}
{{- $_ := set $cfg.bfd "configFile" "/run/portlb/bird-bfd.conf" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Whether gobgpd binds a privileged port (then, and only then, it gets NET_BIND_SERVICE). */}}
{{- define "portlb.speakerBindsPrivileged" -}}
{{- $port := 0 -}}
{{- if .Values.config.bgp -}}{{- $port = int (default -1 .Values.config.bgp.listenPort) -}}{{- end -}}
{{- if and (ge $port 1) (lt $port 1024) -}}true{{- end -}}
{{- end -}}

{{- define "portlb.metricsPort" -}}
{{- $listen := "node:9180" -}}
{{- if and .Values.config.http .Values.config.http.listen -}}{{- $listen = .Values.config.http.listen -}}{{- end -}}
{{- last (splitList ":" $listen) -}}
{{- end -}}
