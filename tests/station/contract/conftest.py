"""The backends the port contract runs over: each port's fixture is parametrised by name.

A new backend (issue 19: an object store with object lock, PostgreSQL) adds a factory here and passes the
same tests; nothing else in the contract names a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

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


@pytest.fixture(params=sorted(STORE_BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], EvidenceStore]]:
    """A factory opening the backend's store on one place: called again, it is the same store reopened."""
    opened: list[EvidenceStore] = []

    def make() -> EvidenceStore:
        store = STORE_BACKENDS[request.param](tmp_path)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], EvidenceStore]) -> EvidenceStore:
    made = make_store()
    made.lock()
    return made


@pytest.fixture(params=sorted(INDEX_BACKENDS))
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Index]]:
    """A factory opening the backend's index on one place: called again, it is the same index reopened."""
    opened: list[Index] = []

    def make() -> Index:
        index = INDEX_BACKENDS[request.param](tmp_path)
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()


@pytest.fixture
def index(make_index: Callable[[], Index]) -> Index:
    return make_index()
