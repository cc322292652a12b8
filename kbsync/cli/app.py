"""The runtime context moved to `kbsync.runtime` (the daemon sits on it too); this name stays
for command modules written against it."""

from kbsync.runtime import App, ensure_state_dir, worker_name

__all__ = ["App", "ensure_state_dir", "worker_name"]
