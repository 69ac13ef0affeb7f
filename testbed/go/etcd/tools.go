//go:build tools

// Package tools names the command this module builds (etcd's main package), so that
// `go mod tidy` keeps its dependencies and their checksums.
package tools

import _ "go.etcd.io/etcd/server/v3"
