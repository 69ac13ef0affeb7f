"""metalflow: bare-metal provisioning on Temporal. This package is the shared contract."""

__version__ = "0.1.0"
