"""Where capgate keeps its files: the database and, beside it, trained profiles and kept labels."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = ".capgate/capgate.db"


def database_url() -> str:
    """``CAPGATE_DB``: a SQLite file path (or ``sqlite:///path``) or a ``postgresql://`` URL."""
    return os.environ.get("CAPGATE_DB", "") or DEFAULT_DB


def sqlite_path(url: str) -> Path | None:
    if url.startswith(("postgresql://", "postgres://")):
        return None
    return Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))


def missing_folder(url: str) -> Path | None:
    """The folder a SQLite database ``url`` would be created in, when that folder does not exist.

    SQLite (and capgate's store) would make it, so a mistyped ``--db`` or ``CAPGATE_DB`` would
    quietly start an empty database somewhere else; the commands refuse instead. The default data
    folder is the exception: ``make run`` and a first ``capgate keys create`` make it."""
    path = sqlite_path(url)
    if path is None or path.parent.is_dir():
        return None
    if path.parent.resolve() == Path(DEFAULT_DB).parent.resolve():
        return None
    return path.parent


def data_dir(url: str | None = None) -> Path:
    """``CAPGATE_DATA_DIR`` if set; else the SQLite file's folder; else ``./.capgate`` (PostgreSQL)."""
    explicit = os.environ.get("CAPGATE_DATA_DIR")
    if explicit:
        return Path(explicit)
    path = sqlite_path(url or database_url())
    return path.parent if path is not None else Path(".capgate")


def profiles_dir(url: str | None = None) -> Path:
    return data_dir(url) / "profiles"


def labelled_dir(url: str | None = None) -> Path:
    """Labels learnt from use (reportgood, human answers): ``<family>/labels.csv`` plus images."""
    return data_dir(url) / "labelled"
