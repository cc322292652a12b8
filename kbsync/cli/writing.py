"""The model writer a command uses: the configured model, this process's run id and worker name.

The editing stack (torch, transformers) is imported inside the commands that need it, so
`kbsync status` and `kbsync db upgrade` start in a fraction of a second; apply, rollback and
verify take the model's lock and check their arguments before the model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kbsync.runtime import App, Stop, worker_name

if TYPE_CHECKING:
    from kbsync.versions.writer import ModelWriter


def writer_for(app: App, stop: Stop | None = None) -> ModelWriter:
    from kbsync.sync.from_settings import model_writer

    return model_writer(app.settings, app.database(), app.state_dir, run_id=app.run_id, worker=worker_name(),
                        stop=stop)
