{{/*
Rejects, at `helm install`/`helm template` time, value combinations that the API server would
refuse when applying, or that could not work. The Service rules are the API server's own
(pkg/apis/core/validation ValidateService, validateServiceExternalTrafficPolicy and
pkg/api/service ExternallyAccessible / NeedsHealthCheck). Every message starts with "tandem:".
*/}}
{{- define "tandem.validate" -}}
{{- $v := .Values -}}
{{- $svc := $v.service -}}

{{- if not (has $v.tier (list "router" "edge")) -}}
{{- fail (printf "tandem: tier must be \"router\" or \"edge\", not %q" (toString $v.tier)) -}}
{{- end -}}
{{- if not (has $v.kind (list "Deployment" "DaemonSet")) -}}
{{- fail (printf "tandem: kind must be Deployment or DaemonSet, not %q" (toString $v.kind)) -}}
{{- end -}}

{{- $full := include "tandem.fullname" . -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $full) -}}
{{- fail (printf "tandem: the release's full name %q is not a valid Service name (DNS-1035 label: lower-case letters, digits and '-', starting with a letter); set fullnameOverride" $full) -}}
{{- end -}}

{{/* Shutdown: Kubernetes kills the pod after terminationGracePeriodSeconds. */}}
{{- $drain := add $v.shutdown.delaySeconds $v.shutdown.graceSeconds -}}
{{- if not (kindIs "invalid" $v.terminationGracePeriodSeconds) -}}
{{- if le (int $v.terminationGracePeriodSeconds) (int $drain) -}}
{{- fail (printf "tandem: terminationGracePeriodSeconds (%d) must be larger than shutdown.delaySeconds + shutdown.graceSeconds (%d + %d = %d), or the kubelet kills in-flight requests; leave it null to get %d" (int $v.terminationGracePeriodSeconds) (int $v.shutdown.delaySeconds) (int $v.shutdown.graceSeconds) (int $drain) (int (add $drain 10))) -}}
{{- end -}}
{{- end -}}

{{/* RBAC: the router never reads Secrets. */}}
{{- if and (eq $v.tier "router") (eq (toString $v.rbac.secrets) "true") -}}
{{- fail "tandem: rbac.secrets is true on a router: the router reads no Secrets (only the edge watches kubernetes.io/tls Secrets); remove rbac.secrets" -}}
{{- end -}}

{{/* Edge-only settings. */}}
{{- if eq $v.tier "router" -}}
{{- if or $v.edge.defaultCertificate (not (kindIs "invalid" $v.edge.redirectHttpsPort)) (not (kindIs "invalid" $v.edge.hstsMaxAgeSeconds)) -}}
{{- fail "tandem: edge.defaultCertificate, edge.redirectHttpsPort and edge.hstsMaxAgeSeconds are tls-edge settings; this release has tier: router" -}}
{{- end -}}
{{- end -}}

{{/* Legacy fallback: a router feature. */}}
{{- if $v.legacyFallback.enabled -}}
{{- if ne $v.tier "router" -}}
{{- fail "tandem: legacyFallback is served by the router tier; this release has tier: edge (point edge Ingresses at the router's Service instead)" -}}
{{- end -}}
{{- if not $v.legacyFallback.addresses -}}
{{- fail "tandem: legacyFallback.enabled needs legacyFallback.addresses (IPv4 addresses of the legacy front-end)" -}}
{{- end -}}
{{- if not $v.legacyFallback.ports -}}
{{- fail "tandem: legacyFallback.enabled needs at least one entry in legacyFallback.ports" -}}
{{- end -}}
{{- range $v.legacyFallback.addresses -}}
{{- if not (regexMatch "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$" .) -}}
{{- fail (printf "tandem: legacyFallback.addresses: %q is not an IPv4 address (the EndpointSlice has addressType IPv4)" .) -}}
{{- end -}}
{{- if or (hasPrefix "127." .) (hasPrefix "169.254." .) (hasPrefix "0." .) (regexMatch "^(22[4-9]|23[0-9])\\." .) -}}
{{- fail (printf "tandem: legacyFallback.addresses: %q is a loopback, link-local, unspecified or multicast address, which an EndpointSlice may not hold" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* watchNamespace: what the binary must see lives in the release namespace. */}}
{{- if and $v.watchNamespace (ne $v.watchNamespace .Release.Namespace) -}}
{{- if include "tandem.publishService" . -}}
{{- fail (printf "tandem: watchNamespace %q differs from the release namespace %q, so the binary cannot see its own Service for --publish-service; set publishService.enabled=false and publishStatusAddresses, or install into %q" $v.watchNamespace .Release.Namespace $v.watchNamespace) -}}
{{- end -}}
{{- if $v.legacyFallback.enabled -}}
{{- fail (printf "tandem: watchNamespace %q differs from the release namespace %q, so the legacy fallback Ingress and Service would not be watched; install into %q" $v.watchNamespace .Release.Namespace $v.watchNamespace) -}}
{{- end -}}
{{- end -}}

{{- if and $v.ingressClass.default (not $v.ingressClass.create) -}}
{{- fail "tandem: ingressClass.default annotates the IngressClass this release creates; with ingressClass.create=false annotate your own IngressClass instead" -}}
{{- end -}}

{{/* PodDisruptionBudget. */}}
{{- $pdb := $v.podDisruptionBudget -}}
{{- if $pdb.enabled -}}
{{- $hasMin := not (kindIs "invalid" $pdb.minAvailable) -}}
{{- $hasMax := not (kindIs "invalid" $pdb.maxUnavailable) -}}
{{- if not (or $hasMin $hasMax) -}}
{{- fail "tandem: podDisruptionBudget.enabled needs minAvailable or maxUnavailable" -}}
{{- end -}}
{{- if eq $v.kind "DaemonSet" -}}
{{- $isNum := or (kindIs "float64" $pdb.minAvailable) (kindIs "int" $pdb.minAvailable) (kindIs "int64" $pdb.minAvailable) -}}
{{- if not $isNum -}}
{{- fail "tandem: a PodDisruptionBudget over a DaemonSet allows only an integer minAvailable (a DaemonSet has no scale subresource, so maxUnavailable and percentages cannot be computed); set podDisruptionBudget.minAvailable to a number" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Service: the API server's rules. */}}
{{- if $svc.enabled -}}
{{- $lb := eq $svc.type "LoadBalancer" -}}
{{- if not (has $svc.type (list "ClusterIP" "NodePort" "LoadBalancer")) -}}
{{- fail (printf "tandem: service.type must be ClusterIP, NodePort or LoadBalancer, not %q" (toString $svc.type)) -}}
{{- end -}}
{{- range $svc.externalIPs -}}
{{- if or (hasPrefix "127." .) (hasPrefix "169.254." .) (hasPrefix "0." .) (eq . "::") (eq . "::1") (hasPrefix "fe80:" (lower .)) (regexMatch "^(22[4-9]|23[0-9])\\." .) (hasPrefix "ff" (lower .)) -}}
{{- fail (printf "tandem: service.externalIPs: %q is a loopback, link-local, unspecified or multicast address, which the API server rejects" .) -}}
{{- end -}}
{{- end -}}
{{- if and $svc.externalTrafficPolicy (not (include "tandem.externallyAccessible" .)) -}}
{{- fail (printf "tandem: service.externalTrafficPolicy (%s) may only be set for an externally accessible Service: type NodePort or LoadBalancer, or ClusterIP with service.externalIPs; this one is type %s without externalIPs. Add service.externalIPs or set service.externalTrafficPolicy to \"\"" $svc.externalTrafficPolicy $svc.type) -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $svc.healthCheckNodePort)) (not (and $lb (eq $svc.externalTrafficPolicy "Local"))) -}}
{{- fail (printf "tandem: service.healthCheckNodePort may only be set when service.type is LoadBalancer and service.externalTrafficPolicy is Local (here: type %s, externalTrafficPolicy %q)" $svc.type (toString $svc.externalTrafficPolicy)) -}}
{{- end -}}
{{- if not $lb -}}
{{- if $svc.loadBalancerIP -}}
{{- fail (printf "tandem: service.loadBalancerIP is only meaningful for service.type LoadBalancer (here: %s)" $svc.type) -}}
{{- end -}}
{{- if $svc.loadBalancerSourceRanges -}}
{{- fail (printf "tandem: service.loadBalancerSourceRanges may only be used when service.type is LoadBalancer (here: %s)" $svc.type) -}}
{{- end -}}
{{- if $svc.loadBalancerClass -}}
{{- fail (printf "tandem: service.loadBalancerClass may only be used when service.type is LoadBalancer (here: %s)" $svc.type) -}}
{{- end -}}
{{- if not (kindIs "invalid" $svc.allocateLoadBalancerNodePorts) -}}
{{- fail (printf "tandem: service.allocateLoadBalancerNodePorts may only be used when service.type is LoadBalancer (here: %s)" $svc.type) -}}
{{- end -}}
{{- end -}}
{{- if eq $svc.type "ClusterIP" -}}
{{- if or (not (kindIs "invalid" $svc.nodePorts.http)) (not (kindIs "invalid" $svc.nodePorts.https)) -}}
{{- fail "tandem: service.nodePorts may not be used when service.type is ClusterIP" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.tier "router") (not (kindIs "invalid" $svc.nodePorts.https)) -}}
{{- fail "tandem: service.nodePorts.https is an edge port; the router's Service has only the http port" -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $svc.nodePorts.http)) (not (kindIs "invalid" $svc.nodePorts.https)) -}}
{{- if eq (int $svc.nodePorts.http) (int $svc.nodePorts.https) -}}
{{- fail "tandem: service.nodePorts.http and service.nodePorts.https must differ" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.tier "edge") (eq (int $svc.ports.http) (int $svc.ports.https)) -}}
{{- fail "tandem: service.ports.http and service.ports.https must differ" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.tier "edge") (eq (int $v.containerPorts.http) (int $v.containerPorts.https)) -}}
{{- fail "tandem: containerPorts.http and containerPorts.https must differ" -}}
{{- end -}}
{{- if or (eq (int $v.containerPorts.admin) (int $v.containerPorts.http)) (and (eq $v.tier "edge") (eq (int $v.containerPorts.admin) (int $v.containerPorts.https))) -}}
{{- fail "tandem: containerPorts.admin must differ from the traffic ports" -}}
{{- end -}}
{{- end -}}
