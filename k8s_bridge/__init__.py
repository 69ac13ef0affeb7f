"""Kubernetes bridge: BareMetalHost watch -> HostWorkflow start/update/signal (not built yet)."""
