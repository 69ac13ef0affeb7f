"""Local stand-ins for a datacenter: Temporal dev server, BMC emulators, emulated hosts."""
