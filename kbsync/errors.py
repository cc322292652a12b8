"""kbsync's exception tree. Every error a user can cause is one of these.

    KbsyncError                      exit 1   (anything else kbsync raises on purpose)
    ├── ConfigError                  exit 2   malformed or invalid configuration, bad CLI input
    ├── StateError                   exit 3   state directory / files missing, unwritable, tampered
    │   ├── DeltaIntegrityError               a delta file whose sha256 does not match SQL
    │   └── DiskFullError                     no space left: the disk, what is free, what is needed
    ├── DatabaseError                exit 4   database unreachable, locked, or behind migrations
    │   ├── SchemaOutOfDateError              run `kbsync db upgrade`
    │   ├── LockedError                       another writer holds the lock
    │   └── IllegalTransitionError            an edit-request/batch state change that is not allowed
    ├── SourceError                  exit 5   knowledge source: unreadable RDF, SPARQL endpoint faults
    │   ├── EndpointError                     unreachable / not SPARQL / gave up after retries
    │   └── CatalogueError                    relation catalogue problems, unknown relation id
    ├── ModelError                   exit 6   model cannot be loaded / architecture unknown / OOM
    │   ├── TokenizationError                 a label that tokenises to nothing, subject not in prompt
    │   └── ServingError                      the serving engine: [probe] endpoint down, a reload failed
    ├── EditError                    exit 7   the editor could not compute an update
    │   └── VerificationError                 applied edits that no longer hold (`kbsync verify`)
    └── SelectionError               exit 8   a batch or model version named on the command line
        ├── RollbackError                     that does not exist or is not in the current model
        └── VersionError                      that does not exist, not yet, or was pruned from disk

The CLI prints ``TypeName: message`` on one line and exits with the branch's code. A stop
signal (`kbsync.runtime.Interrupted`, not an error) exits 128 + the signal's number.
Low-level errors (SQLAlchemy, HTTP, torch OOM) are translated where they enter:
``raise DatabaseError("...") from exc``.
"""

from __future__ import annotations


class KbsyncError(Exception):
    exit_code = 1

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{type(self).__name__}: {text}"


class ConfigError(KbsyncError):
    exit_code = 2


class StateError(KbsyncError):
    exit_code = 3


class DeltaIntegrityError(StateError):
    pass


class DiskFullError(StateError):
    pass


class DatabaseError(KbsyncError):
    exit_code = 4


class SchemaOutOfDateError(DatabaseError):
    pass


class LockedError(DatabaseError):
    pass


class IllegalTransitionError(DatabaseError):
    pass


class SourceError(KbsyncError):
    exit_code = 5


class EndpointError(SourceError):
    pass


class CatalogueError(SourceError):
    pass


class ModelError(KbsyncError):
    exit_code = 6


class TokenizationError(ModelError):
    pass


class ServingError(ModelError):
    pass


class EditError(KbsyncError):
    exit_code = 7


class VerificationError(EditError):
    pass


class SelectionError(KbsyncError):
    exit_code = 8


class RollbackError(SelectionError):
    pass


class VersionError(SelectionError):
    pass
