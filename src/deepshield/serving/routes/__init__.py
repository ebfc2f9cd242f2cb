"""The app's routes, one module per concern; each reads what it shares from the Runtime (RuntimeDep)."""
