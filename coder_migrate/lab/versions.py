"""Every pinned version the lab builds, in one place.

Changing a version here makes ``coder-migrate lab build`` build that component again into a
new cache directory (each component's directory is keyed by its version); the old one stays
until the cache is removed.
"""

from __future__ import annotations

from typing import Final

#: k8s.io/kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler.
KUBERNETES_VERSION: Final = "v1.36.3"
#: The staging modules (k8s.io/api, k8s.io/client-go, ...) are tagged v0.<minor>.<patch>.
KUBERNETES_STAGING_VERSION: Final = "v0.36.3"
KUBERNETES_MODULE: Final = "k8s.io/kubernetes"
#: kubectl too, so the lab needs no kubectl from elsewhere (kwokctl uses one).
KUBERNETES_COMMANDS: Final = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)

#: etcd 3.6.x is what Kubernetes 1.34-1.36 is paired with.
ETCD_VERSION: Final = "v3.6.16"
ETCD_MODULE: Final = "go.etcd.io/etcd/server/v3"

#: kwok (the node and pod simulator) and kwokctl (starts the control-plane processes).
KWOK_VERSION: Final = "v0.8.0"
KWOK_MODULE: Final = "sigs.k8s.io/kwok"

#: helm v3; the version ldflag makes `helm version` print a full semver (pyhelm3 parses it).
HELM_VERSION: Final = "v3.21.4"
HELM_MODULE: Final = "helm.sh/helm/v3"

#: The helm-diff plugin, built from its Go module and installed as a helm plugin.
HELM_DIFF_VERSION: Final = "v3.9.14"
HELM_DIFF_MODULE: Final = "github.com/databus23/helm-diff/v3"

#: The Go language version written into the generated wrapper modules.
GO_LANGUAGE_VERSION: Final = "1.26.0"
