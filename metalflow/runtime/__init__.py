"""Process plumbing shared by workers, the bridge and the CLI: settings, the Temporal and
Kubernetes connections, secret resolution, metrics. Imports only the API package.
"""
