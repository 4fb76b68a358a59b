"""sync/uploader/transfer.py without a broker: offers, have-ranges, the chunk window and pipelining."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from pathlib import Path

import pytest

from agent.evidence.store import StoreLayout
from sync.protocol import FileOffer, FileStatus, decode_chunk
from sync.uploader.plan import Offer, normalize_ranges
from sync.uploader.transfer import FilePipeline

SESSION = "s1"


class Station:
    """Answers the pipeline's messages one per ``wait()``: a slow station, so the window fills."""

    def __init__(self, files: dict[str, bytes], answers_per_wait: int = 1) -> None:
        self.files = files
        self.answers_per_wait = answers_per_wait
        self.have: dict[str, list[tuple[int, int]]] = {}
        self.stored: set[str] = set()
        self.inbox: deque[tuple[str, bytes]] = deque()
        self.log: list[tuple[str, str]] = []  # (kind, file) in publishing order
        self.pipeline: FilePipeline | None = None
        self.max_unconfirmed = 0
        self.unconfirmed: set[tuple[str, int]] = set()
        self.drop_staging_of: str | None = None

    def publish(self, kind: str, payload: bytes) -> None:
        if kind == "chunk":
            header, _ = decode_chunk(payload)
            self.unconfirmed.add((header.file, header.offset))
            self.max_unconfirmed = max(self.max_unconfirmed, len(self.unconfirmed))
            self.log.append(("chunk", header.file))
        else:
            self.log.append((kind, json.loads(payload)["file"]))
        self.inbox.append((kind, payload))

    def wait(self) -> None:
        assert self.pipeline is not None
        if not self.inbox:
            raise AssertionError("the pipeline waits with nothing in flight: it would stall")
        for _ in range(min(self.answers_per_wait, len(self.inbox))):
            kind, payload = self.inbox.popleft()
            if kind == "file":
                offer = FileOffer.decode(payload)
                name, sha = offer.file, offer.sha256
            else:
                header, _ = decode_chunk(payload)
                name, sha = header.file, header.sha256
                self.have[name] = normalize_ranges([*self.have.get(name, []), (header.offset, header.length)],
                                                   header.size)
                if self.have[name] == [(0, header.size)] or header.size == 0:
                    self.stored.add(name)
                if self.drop_staging_of == name:
                    self.have[name], self.drop_staging_of = [], None
            have = self.have.get(name, [])
            self.unconfirmed = {(f, o) for f, o in self.unconfirmed
                                if f != name or not any(s <= o < s + n for s, n in have)}
            if name in self.stored:
                self.unconfirmed = {(f, o) for f, o in self.unconfirmed if f != name}
            self.pipeline.on_status(FileStatus(SESSION, name, sha, name in self.stored, [list(r) for r in have]))


def setup(tmp_path: Path, sizes: list[int], chunk: int, window: int,
          answers_per_wait: int = 1) -> tuple[FilePipeline, Station, list[Offer]]:
    layout = StoreLayout(tmp_path / "store")
    layout.create()
    offers, files = [], {}
    for n, size in enumerate(sizes, start=1):
        data = hashlib.shake_256(str(n).encode()).digest(size)
        stored = layout.write_segment(f"{n:06d}.mp4", data)
        offers.append(Offer(stored.name, stored.sha256, stored.size, n))
        files[stored.name] = data
    station = Station(files, answers_per_wait)
    pipeline = FilePipeline(layout=layout, session=SESSION, offers=offers, chunk_bytes=chunk, window=window,
                            publish=station.publish, wait=station.wait)
    station.pipeline = pipeline
    return pipeline, station, offers


def test_the_window_bounds_unconfirmed_chunks_and_every_file_completes(tmp_path: Path) -> None:
    pipeline, station, offers = setup(tmp_path, [10_000, 3_000, 0, 7_001], chunk=1000, window=3)
    pipeline.run()
    assert station.stored == {o.file for o in offers}
    assert 0 < station.max_unconfirmed <= 3
    assert [o.file for o in pipeline.complete_files()] == [o.file for o in offers]
    assert pipeline.stats.chunks_sent == 10 + 3 + 1 + 8 and pipeline.stats.bytes_sent == 20_001


def test_the_next_file_is_offered_while_chunks_are_in_flight(tmp_path: Path) -> None:
    pipeline, station, offers = setup(tmp_path, [5_000, 5_000], chunk=1000, window=4, answers_per_wait=2)
    pipeline.run()
    second_offer = station.log.index(("file", offers[1].file))
    # Offered before the first file's last chunk was published: its answer arrives while that one flies.
    last_chunk_of_first = max(i for i, entry in enumerate(station.log) if entry == ("chunk", offers[0].file))
    assert second_offer < last_chunk_of_first


def test_a_stored_file_sends_no_chunk_and_a_held_range_is_skipped(tmp_path: Path) -> None:
    pipeline, station, offers = setup(tmp_path, [4_000, 4_000], chunk=1000, window=8)
    station.stored.add(offers[0].file)
    station.have[offers[1].file] = [(1000, 2000)]
    pipeline.run()
    sent = [entry for entry in station.log if entry[0] == "chunk"]
    assert sent == [("chunk", offers[1].file)] * 2
    assert pipeline.stats.files_stored == 2


def test_a_station_that_drops_its_staging_copy_ends_that_file_for_this_session(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline, station, offers = setup(tmp_path, [6_000, 2_000], chunk=1000, window=2, answers_per_wait=1)
    station.have[offers[0].file] = [(0, 2000)]
    station.drop_staging_of = offers[0].file
    pipeline.run()
    assert offers[0].file not in station.stored and offers[1].file in station.stored
    assert [o.file for o in pipeline.complete_files()] == [offers[1].file]
    assert "dropped its staging copy" in caplog.text


def test_a_file_gone_from_the_store_is_not_offered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline, station, offers = setup(tmp_path, [2_000, 2_000], chunk=1000, window=2)
    path = tmp_path / "store" / offers[0].file
    path.chmod(0o644)
    path.unlink()
    pipeline.run()
    assert station.stored == {offers[1].file} and pipeline.stats.files_failed == 1
    assert f"file {offers[0].file} (seq 1): cannot be read" in caplog.text


def test_a_file_shorter_than_its_record_fails_without_sending_the_rest(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    pipeline, station, offers = setup(tmp_path, [3_000], chunk=1000, window=4)
    path = tmp_path / "store" / offers[0].file
    path.chmod(0o644)
    os_truncate = path.read_bytes()[:1500]
    path.write_bytes(os_truncate)
    pipeline.run()
    assert offers[0].file not in station.stored and pipeline.stats.files_failed == 1
    assert "ends before byte 2000" in caplog.text
