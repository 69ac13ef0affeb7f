"""Client helpers: how scripts, the CLI, the bridge and client-side activities talk to host,
allocator and machine-set workflows from outside.
"""
