"""Kubernetes bridge: BareMetalHost, HostClaim and HostSet watches -> host, allocator and
machine-set workflows (start, validated Update, Signals); status written back."""
