"""Where a search keeps its Optuna study: beside the sweep's Tune state, so that ``--resume``
from any machine that reaches the storage path continues the same study.

* local storage: ``<storage>/<sweep>/optuna.db`` (an Optuna RDB sqlite storage);
* gs:// or s3:// storage: Optuna's ``JournalStorage`` (an append-only log of the study's
  operations) in a local file that is copied to ``<storage>/<sweep>/optuna.journal`` with
  pyarrow whenever Tune snapshots the searcher and whenever a trial ends (``StudySearch``), and
  copied back before the study is opened, so a new head node starts from it;
* ``--optuna-storage URL``: any Optuna RDB URL (a shared database), used as it is.

The journal is pushed before Tune uploads its experiment snapshot, so the study in the storage
path is never behind the snapshot that ``--resume`` restores (``searcher.py`` reconciles a study
that is ahead of it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

JOURNAL_FILE = "optuna.journal"


class StudyJournal:
    """An Optuna journal file synced with ``remote`` (a gs:// or s3:// URI). Pickled with the
    searcher: it holds only the URI, and places its local copy on whichever machine it runs."""

    def __init__(self, remote: str):
        self.remote = remote

    @property
    def local(self) -> Path:
        from superpos.settings import cache_dir

        return cache_dir() / "optuna" / hashlib.sha1(self.remote.encode()).hexdigest()[:16] / JOURNAL_FILE

    def _fs(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.remote)

    def pull(self) -> None:
        """Replace the local copy by the storage path's (none there: start empty)."""
        import pyarrow.fs

        fs, path = self._fs()
        self.local.parent.mkdir(parents=True, exist_ok=True)
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            self.local.write_bytes(b"")
            return
        with fs.open_input_stream(path) as f:
            self.local.write_bytes(f.read())

    def push(self) -> None:
        fs, path = self._fs()
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(self.local.read_bytes())

    def storage(self):
        """Pull, then open the local copy as an Optuna storage."""
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.pull()
        return JournalStorage(JournalFileBackend(str(self.local)))


def study_storage(root: str, override: str | None):
    """(Optuna storage, the journal to keep in sync or None) for a search under ``root``."""
    import optuna

    if override:
        return optuna.storages.RDBStorage(override), None
    if "://" not in root:
        return optuna.storages.RDBStorage(f"sqlite:///{root}/optuna.db"), None
    journal = StudyJournal(f"{root.rstrip('/')}/{JOURNAL_FILE}")
    return journal.storage(), journal
