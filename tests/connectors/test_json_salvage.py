"""A JSON export cut short lands every submission that parses; the broken tail is one reject
naming its byte offset; a file of which nothing parses is a warning that loses data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.webform import iter_webform_export


def submissions(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"s{i}", "submitted_at": "2026-10-01T10:00:00Z", "email": f"p{i}@example.com"}
        for i in range(n)
    ]


@pytest.mark.parametrize("wrapped", [False, True], ids=["list", "object"])
def test_a_json_export_cut_short_lands_every_complete_submission(
    tmp_path: Path, wrapped: bool
) -> None:
    doc: Any = {"form": "fair", "submissions": submissions(5)} if wrapped else submissions(5)
    full = json.dumps(doc, indent=1, ensure_ascii=False).encode()
    cut = full.index(b'"s4"') + 3  # inside the last submission
    path = tmp_path / "export.json"
    path.write_bytes(full[:cut])
    [batch] = iter_webform_export("forms", str(path), None)
    assert [r.source_record_id for r in batch.records] == ["s0", "s1", "s2", "s3"]
    [reject] = batch.rejects
    start = full.rindex(b"{", 0, cut)  # the broken submission begins at its brace
    assert reject.code == "malformed_json"
    assert reject.source_record_id == f"{path}@{start}"
    assert f"byte {start}" in reject.message and "4 submission(s)" in reject.message
    assert reject.raw.startswith("{") and '"s4' in reject.raw
    assert batch.warnings == []


def test_byte_offsets_count_bytes_not_characters(tmp_path: Path) -> None:
    subs = submissions(2)
    subs[0]["name"] = "Çağrı Öztürk İşçi"  # letters of two bytes each before the break
    full = json.dumps(subs, ensure_ascii=False).encode()
    path = tmp_path / "export.json"
    path.write_bytes(full[:-10])
    [batch] = iter_webform_export("forms", str(path), None)
    [reject] = batch.rejects
    assert [r.source_record_id for r in batch.records] == ["s0"]
    assert reject.source_record_id == f"{path}@{full.index(b', {') + 2}"


def test_a_json_file_of_which_nothing_parses_loses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(b"<html>502 Bad Gateway</html>")
    [batch] = iter_webform_export("forms", str(path), None)
    [w] = batch.warnings
    assert (w.file, w.code, w.loses_data) == ("export.json", "nothing_read", True)
    path.write_bytes(b"")
    [batch] = iter_webform_export("forms", str(path), None)
    assert [(w.code, w.loses_data) for w in batch.warnings] == [("empty_file", False)]
    assert batch.rejects == []


@pytest.mark.parametrize("wrapped", [False, True], ids=["list", "object"])
def test_a_big_export_is_read_in_batches_and_its_cursor_moves_at_the_last(
    tmp_path: Path, wrapped: bool
) -> None:
    """Submissions are parsed a batch at a time, never all of them at once; a run stopped after
    any batch but the last keeps the old cursor, so the next run reads the file again."""
    doc: Any = {"form": "fair", "items": submissions(7)} if wrapped else submissions(7)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    [whole] = iter_webform_export("forms", str(path), None)
    parts = list(iter_webform_export("forms", str(path), None, batch_submissions=3))
    assert [len(b.records) for b in parts] == [3, 3, 1]
    assert [r for b in parts for r in b.records] == whole.records
    assert [r.source_record_id for r in whole.records] == [f"s{i}" for i in range(7)]
    assert all(str(path) not in b.cursor["files"] for b in parts[:-1])
    assert parts[-1].cursor == whole.cursor and str(path) in whole.cursor["files"]
    again = list(iter_webform_export("forms", str(path), parts[0].cursor, batch_submissions=3))
    assert [r for b in again for r in b.records] == whole.records


def test_a_submission_nested_too_deeply_costs_only_itself(tmp_path: Path) -> None:
    subs: list[Any] = submissions(3)
    bomb = '{"id": "bomb", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    text = "[" + ", ".join([json.dumps(subs[0]), bomb, json.dumps(subs[1])]) + "]"
    path = tmp_path / "export.json"
    path.write_text(text, encoding="utf-8")
    parts = list(iter_webform_export("forms", str(path), None, batch_submissions=1))
    assert [r.source_record_id for b in parts for r in b.records] == ["s0", "s1"]
    [reject] = [j for b in parts for j in b.rejects]
    assert (reject.source_record_id, reject.code) == (f"{path}#1", "malformed_json")
    assert reject.message == "nested too deeply to parse" and reject.raw.startswith('{"id": "bomb"')
