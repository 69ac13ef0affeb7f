"""Bottom layer: metalflow's pure API (models, the lifecycle table, contracts, validation).

Sandbox-safe and free of I/O: workflows, activities, worker, bridge and CLI import it; it imports
nothing else of the project (import-linter contracts in pyproject.toml keep it so).
"""
