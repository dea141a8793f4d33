"""The running node, below the HTTP API and the CLI: its settings (``Settings``), its API
keys (``KeyRing``, ``Principal``) and its background maintenance (``MaintenanceJob``).
Nothing here speaks HTTP; ``api`` and ``istore`` (the CLI) both build on it."""
