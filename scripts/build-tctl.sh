#!/usr/bin/env bash
# Builds tctl, Temporal's older CLI (the 1.18 line, still in operators' hands), from its Go module
# through the build module testbed/go/tctl (`go install pkg@version` would ask the proxy for the
# module's version list, which it refuses for tctl; a pinned requirement needs no list).
#
# Output: ${METALFLOW_CACHE:-~/.cache/metalflow}/bin/tctl-<version>/tctl, filled in a temporary
# directory and renamed into place; Go's caches are shared with the other test-bed builds.
# A second run returns at once. Prints the binary's directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/testbed/go/tctl"
version=$(awk '$1 == "require" && $2 == "github.com/temporalio/tctl" {print $3}' "$mod/go.mod")
[ -n "$version" ] || { echo "build-tctl: no github.com/temporalio/tctl version in $mod/go.mod" >&2; exit 1; }
cache=${METALFLOW_CACHE:-$HOME/.cache/metalflow}
out="$cache/bin/tctl-$version"
if [ -x "$out/tctl" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || { echo "build-tctl: Go is not installed" >&2; exit 1; }
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS="-modcacherw -mod=readonly"
export CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$cache/bin" "$GOMODCACHE" "$GOCACHE"
work=$(mktemp -d "$cache/bin/.tctl-$version.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-tctl: building tctl $version into $out" >&2
(cd "$mod" && go build -trimpath -ldflags='-s -w' -o "$work/tctl" github.com/temporalio/tctl/cmd/tctl)
"$work/tctl" --version >&2
chmod 755 "$work"
mv -T "$work" "$out" 2>/dev/null || [ -x "$out/tctl" ]
echo "$out"
