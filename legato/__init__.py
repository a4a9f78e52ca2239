"""Legato's shared kernel: the contracts the services meet through.

Services (`history`, `matching`, `frontend`, `worker`) import from here and never
from each other; `legato.server` assembles them in one process.
"""

DEFAULT_NAMESPACE = "default"
