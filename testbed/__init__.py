"""The emulated data center (test bed): emulators, fake API server, QEMU VMs, fault proxy and the
demo. Lives beside the product, never inside its wheel; usable from a checkout only.
"""
