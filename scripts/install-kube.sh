#!/usr/bin/env bash
# Builds the pinned kube-apiserver and etcd that the cloud tests run on
# 127.0.0.1, from the Go module proxy, into a cache that later runs reuse
# (seconds when present). Kubernetes' own go.mod points its staging modules at
# ./staging, so a wrapper module requires k8s.io/kubernetes and replaces each
# staging module with its published v0.x twin; etcd's server module is built
# the same way. Needs Go; about 4 minutes on 2 cores the first time.
#
#   scripts/install-kube.sh            (into $NUKETOWN_KUBE_DIR, default below)
set -euo pipefail
k8s=v1.37.2
etcd=v3.6.16
dir=${NUKETOWN_KUBE_DIR:-/var/cache/nuketown/kube}/$k8s-etcd-$etcd
if [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/etcd" ]; then
  echo "kube-apiserver $k8s and etcd $etcd: cached in $dir/bin"
  exit 0
fi
go=$(command -v go || true)
[ -n "$go" ] || [ ! -x /usr/local/go/bin/go ] || go=/usr/local/go/bin/go
if [ -z "$go" ]; then
  echo "kube-apiserver and etcd are built with Go, which is not installed (https://go.dev/dl/)" >&2
  exit 4
fi
staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
  kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver streaming"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/kube" "$work/etcd" "$dir.tmp/bin"
{
  echo "module nuketown.test/kube"
  echo "go 1.26.0"
  echo "require k8s.io/kubernetes $k8s"
  echo "tool k8s.io/kubernetes/cmd/kube-apiserver"
  echo "replace ("
  for m in $staging; do echo "  k8s.io/$m => k8s.io/$m v0${k8s#v1}"; done
  echo ")"
} >"$work/kube/go.mod"
{
  echo "module nuketown.test/etcd"
  echo "go 1.26.0"
  echo "require go.etcd.io/etcd/server/v3 $etcd"
  echo "tool go.etcd.io/etcd/server/v3"
} >"$work/etcd/go.mod"
echo "building kube-apiserver $k8s and etcd $etcd with $("$go" version) (minutes the first time)"
export GOFLAGS=-mod=mod CGO_ENABLED=0
(cd "$work/etcd" && "$go" mod tidy && "$go" build -trimpath -o "$dir.tmp/bin/etcd" go.etcd.io/etcd/server/v3)
(cd "$work/kube" && "$go" mod tidy && "$go" build -trimpath -o "$dir.tmp/bin/kube-apiserver" \
  -ldflags "-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$k8s" | cut -d. -f2)" \
  k8s.io/kubernetes/cmd/kube-apiserver)
rm -rf "$dir" && mv "$dir.tmp" "$dir"
"$dir/bin/kube-apiserver" --version
"$dir/bin/etcd" --version | head -1
