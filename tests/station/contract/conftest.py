"""The backends the port contract runs over: each port's fixture is parametrised by name.

A new backend (issue 19: an object store with object lock, PostgreSQL) adds a factory here and passes the
same tests; nothing else in the contract names a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from sync.station.index import SqliteIndex
from sync.station.index_ports import Index
from sync.station.ports import EvidenceStore
from sync.station.store import FilesystemEvidenceStore

STORE_BACKENDS: dict[str, Callable[[Path], EvidenceStore]] = {
    "filesystem": lambda folder: FilesystemEvidenceStore(folder / "data"),
}
INDEX_BACKENDS: dict[str, Callable[[Path], Index]] = {
    "sqlite": lambda folder: SqliteIndex(folder / "index.sqlite"),
}


T = TypeVar("T", EvidenceStore, Index)


class Reopener(Generic[T]):
    """Opens one backend on one place; called again, the same store or index reopened. Closes them all."""

    def __init__(self, factory: Callable[[Path], T], folder: Path) -> None:
        self._factory, self._folder = factory, folder
        self.opened: list[T] = []

    def __call__(self) -> T:
        made = self._factory(self._folder)
        self.opened.append(made)
        return made

    def close(self) -> None:
        for made in self.opened:
            made.close()


@pytest.fixture(params=sorted(STORE_BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], EvidenceStore]]:
    """A factory opening the backend's store on one place: called again, it is the same store reopened."""
    opener = Reopener(STORE_BACKENDS[request.param], tmp_path)
    yield opener
    opener.close()


@pytest.fixture
def store(make_store: Callable[[], EvidenceStore]) -> EvidenceStore:
    made = make_store()
    made.lock()
    return made


@pytest.fixture(params=sorted(INDEX_BACKENDS))
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Index]]:
    """A factory opening the backend's index on one place: called again, it is the same index reopened."""
    opener = Reopener(INDEX_BACKENDS[request.param], tmp_path)
    yield opener
    opener.close()


@pytest.fixture
def index(make_index: Callable[[], Index]) -> Index:
    return make_index()
