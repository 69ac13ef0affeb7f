"""The emulated data center (test bed): emulators, fake API server, QEMU VMs, fault proxy and the
demo. Lives beside the product, never inside its wheel; usable from a checkout only, with the
`testbed` extra (`make install`). What it builds or fetches goes to the build cache outside the
clone (cache.py); tests/fixtures/ starts its components for the tests.
"""
