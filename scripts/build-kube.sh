#!/usr/bin/env bash
# Builds the Kubernetes test-bed binaries (kube-apiserver, kube-controller-manager, kubeadm,
# kubelet) from the k8s.io/kubernetes Go module, through the build module testbed/go/kube (which
# replaces the staging modules with their published releases), and etcd from its Go module
# (testbed/go/etcd: the release kubeadm pairs with this Kubernetes). Only the Go module proxy is
# used.
#
# Output: ${METALFLOW_CACHE:-~/.cache/metalflow}/bin/kubernetes-<version>/ and .../etcd-<version>/
# (prints both, one a line), each filled in a temporary
# directory and renamed into place, so a directory there is always whole. GOMODCACHE and GOCACHE
# live under ${METALFLOW_CACHE}/go/ and are shared with the other Go builds of the test bed; a
# second run (or a fresh clone on this machine) finds the directory and returns in milliseconds.
# Prints the binaries' directory on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/testbed/go/kube"
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$mod/go.mod")
[ -n "$version" ] || { echo "build-kube: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
cache=${METALFLOW_CACHE:-$HOME/.cache/metalflow}
out="$cache/bin/kubernetes-$version"
cmds=(kube-apiserver kube-controller-manager kubeadm kubelet)
etcd_version=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/testbed/go/etcd/go.mod")
etcd_out="$cache/bin/etcd-$etcd_version"
if [ -d "$out" ] && [ -d "$etcd_out" ]; then echo "$out"; echo "$etcd_out"; exit 0; fi
command -v go >/dev/null || { echo "build-kube: Go is not installed (it builds the Kubernetes test bed)" >&2; exit 1; }
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-modcacherw -mod=readonly"
export CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$cache/bin" "$GOMODCACHE" "$GOCACHE"
if [ ! -d "$etcd_out" ]; then
  ework=$(mktemp -d "$cache/bin/.etcd-$etcd_version.XXXXXX")
  echo "build-kube: building etcd $etcd_version into $etcd_out" >&2
  (cd "$here/testbed/go/etcd" && go build -trimpath -ldflags='-s -w' -o "$ework/etcd" go.etcd.io/etcd/server/v3) \
    || { rm -rf "$ework"; exit 1; }
  "$ework/etcd" --version >&2
  chmod 755 "$ework"
  mv -T "$ework" "$etcd_out" 2>/dev/null || { rm -rf "$ework"; [ -d "$etcd_out" ]; }
fi
if [ -d "$out" ]; then echo "$out"; echo "$etcd_out"; exit 0; fi
work=$(mktemp -d "$cache/bin/.kubernetes-$version.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-kube: building Kubernetes $version (${cmds[*]}) into $out; the first build takes minutes" >&2
# The version the binaries report (kubeadm compares it with the control plane's and the kubelet's),
# set the way Kubernetes' own build does; it changes only the link step, not the compiled packages.
minor=${version#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
pkgs=()
for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
# One `go build` for all four: the shared packages are compiled once, the link steps run in turn.
(cd "$mod" && go build -tags providerless -trimpath -ldflags="$ldflags" -o "$work/" "${pkgs[@]}")
for c in "${cmds[@]}"; do [ -x "$work/$c" ] || { echo "build-kube: $c was not built" >&2; exit 1; }; done
got=$("$work/kube-apiserver" --version)
[ "$got" = "Kubernetes $version" ] || { echo "build-kube: kube-apiserver says '$got', not $version" >&2; exit 1; }
chmod 755 "$work"
mv -T "$work" "$out" 2>/dev/null || [ -d "$out" ]
echo "$out"
echo "$etcd_out"
