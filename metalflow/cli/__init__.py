"""The `metalflow` command line (top layer)."""
