//go:build tools

// Package tools names the commands this module builds, so that `go mod tidy` keeps their
// dependencies (and their checksums in go.sum).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
