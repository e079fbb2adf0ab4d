"""Files that yield nothing, or less than they hold, are never quiet. Through the real `leadflow`:
each is a warning on stderr, in the run's summary and in `pipeline_runs.stats` naming the file,
the header row found and the `columns:` entry that would help; a file with content of which
nothing could be read makes the run partial (exit 3), one empty on purpose does not."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.clirun import env, leadflow
from tests.conftest import EXAMPLES

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
FINNISH = (
    "Nimi;Sähköposti;Puhelin;Yritys\n"
    "Aino Virtanen;aino@virtanen.fi;+358 40 123 4567;Virtanen Oy\n"
    "Mikko Korhonen;mikko@korhonen.fi;+358 50 765 4321;Korhonen Ab\n"
)
MAPPED = (
    "Ad Soyad;Mail Adresi;İletişim\n"
    "Ada Demir;ada@demir.com.tr;0532 111 22 33\n"
    "Can Ak;can@ak.com.tr;0533 222 33 44\n"
)


@dataclass
class Project:
    folder: Path
    config: Path
    environ: dict[str, str]

    def leadflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return leadflow(
            [args[0], "--config", str(self.config), *args[1:]], self.environ, cwd=self.folder
        )

    def runs(self) -> list[Any]:
        engine = create_engine(f"sqlite:///{self.folder / 'w.db'}")
        with engine.connect() as conn:
            rows = list(conn.execute(text("select status, error, stats from pipeline_runs")))
        engine.dispose()
        return rows


def _project(
    folder: Path, files: dict[str, bytes], sources: list[str], prefect_api_url: str
) -> Project:
    (folder / "in").mkdir()
    for name, data in files.items():
        (folder / "in" / name).write_bytes(data)
    config = folder / "leadflow.yaml"
    config.write_text(
        "warehouse: {url: 'sqlite:///w.db'}\nquality: {docs_dir: docs}\nsources:\n"
        + "".join(f"  - {s}\n" for s in sources),
        encoding="utf-8",
    )
    return Project(folder, config, env(folder, PREFECT_API_URL=prefect_api_url))


def _warnings(stats: str | dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    doc = json.loads(stats) if isinstance(stats, str) else stats
    return {n: s.get("warnings", []) for n, s in doc["sources"].items()}


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Project:
    """A binary file named .csv, a sheet in a language leadflow does not know, and a good one."""
    return _project(
        tmp_path_factory.mktemp("lossy"),
        {
            "photo.csv": PNG,
            "yhteystiedot.csv": FINNISH.encode(),
            "leads.csv": b"Name;Email\nAda Demir;ada@demir.com.tr\n",
        },
        [
            "{name: pictures, kind: spreadsheet, path: in/photo.csv}",
            "{name: finland, kind: spreadsheet, path: in/yhteystiedot.csv}",
            "{name: fair, kind: spreadsheet, path: in/leads.csv}",
        ],
        prefect_api_url,
    )


BINARY = (
    "source pictures: photo.csv: the file is a PNG image, not a CSV; "
    "fix: export the sheet as CSV or XLSX"
)
UNKNOWN = (
    "source finland: yhteystiedot.csv: no header row names an email, phone or name column we "
    "know; header row found: Nimi | Sähköposti | Puhelin | Yritys; fix: add to source finland: "
    'columns: {"Sähköposti": email, "Puhelin": phone}'
)


def test_a_dry_run_shows_what_a_run_would_lose(lossy: Project) -> None:
    dry = lossy.leadflow("run", "--dry-run")
    assert dry.returncode == 3, dry.stderr
    err = dry.stderr.strip().splitlines()
    assert err == [
        f"leadflow: warning: {UNKNOWN}",
        f"leadflow: warning: {BINARY}",
        "leadflow: a run would read nothing from finland: yhteystiedot.csv, pictures: photo.csv",
    ]
    assert f"warning: {BINARY}\n" in dry.stdout
    assert not (lossy.folder / "w.db").exists()


def test_files_that_yield_nothing_make_the_run_partial(lossy: Project) -> None:
    run = lossy.leadflow("run")
    assert run.returncode == 3, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    err = run.stderr.strip().splitlines()
    assert err[:2] == [f"leadflow: warning: {UNKNOWN}", f"leadflow: warning: {BINARY}"]
    assert err[2].startswith("leadflow: run run_") and err[2].endswith(
        " is partial: nothing could be read from finland: yhteystiedot.csv, pictures: "
        "photo.csv (see the warnings above); the rest was published"
    )
    assert len(err) == 3
    # the summary says the same, and the good file was published
    assert f"warning: {UNKNOWN}\nwarning: {BINARY}\n" in run.stdout
    assert "\nfair  " in run.stdout.split("Funnel", 1)[1]
    [(status, error, stats)] = lossy.runs()
    assert status == "partial"
    assert error == (
        "finland: yhteystiedot.csv: no header row names an email, phone or name column we know; "
        "pictures: photo.csv: the file is a PNG image, not a CSV"
    )
    found = _warnings(stats)
    assert found["fair"] == []
    [w] = found["finland"]
    assert (w["file"], w["code"], w["loses_data"]) == ("yhteystiedot.csv", "unknown_header", True)
    assert w["header"] == ["Nimi", "Sähköposti", "Puhelin", "Yritys"]


def test_the_fix_the_warning_names_lands_the_rows(lossy: Project) -> None:
    """The `columns:` entry of the warning, added to the config, reads the file again."""
    fix = '{name: finland, kind: spreadsheet, path: in/yhteystiedot.csv, columns: {"Nimi": full_name, "Sähköposti": email, "Puhelin": phone}}'
    body = lossy.config.read_text(encoding="utf-8")
    body = body.replace("{name: finland, kind: spreadsheet, path: in/yhteystiedot.csv}", fix)
    body = body.replace("  - {name: pictures, kind: spreadsheet, path: in/photo.csv}\n", "")
    lossy.config.write_text(body, encoding="utf-8")
    again = lossy.leadflow("run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "warning" not in again.stderr
    lines = [ln.split() for ln in again.stdout.splitlines()]
    assert ["finland", "2", "2"] == next(ln[:3] for ln in lines if ln and ln[0] == "finland")


@pytest.fixture(scope="module")
def quiet_files(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> Project:
    from io import BytesIO

    from openpyxl import Workbook

    wb = Workbook()
    wb.active.append(["Name", "E-Mail", "Firma"])
    xlsx = BytesIO()
    wb.save(xlsx)
    return _project(
        tmp_path_factory.mktemp("quiet"),
        {
            "empty.csv": b"",
            "only.csv": b"Name;Email\n",
            "only.xlsx": xlsx.getvalue(),
            "mapped.csv": MAPPED.encode(),
        },
        [
            "{name: empty, kind: spreadsheet, path: in/empty.csv}",
            "{name: header_only, kind: spreadsheet, path: in/only.csv}",
            "{name: header_only_xlsx, kind: spreadsheet, path: in/only.xlsx}",
            '{name: mapped, kind: spreadsheet, path: in/mapped.csv, columns: {"E-posta": email}}',
        ],
        prefect_api_url,
    )


def test_files_empty_on_purpose_and_unmapped_columns_are_warnings_of_a_run_that_succeeds(
    quiet_files: Project,
) -> None:
    run = quiet_files.leadflow("run")
    assert run.returncode == 0, run.stderr[-3000:]
    expected = [
        "source empty: empty.csv: the file is empty",
        "source header_only: only.csv: the file has a header row but no rows under it; "
        "header row found: Name | Email",
        "source header_only_xlsx: only.xlsx: the file has a header row but no rows under it; "
        "header row found: Name | E-Mail | Firma",
        'source mapped: mapped.csv: column "İletişim" maps to no field but seems to hold phone '
        'data; fix: add to source mapped: columns: {"İletişim": phone}',
        'source mapped: mapped.csv: columns maps "E-posta" to email, but the table has no such '
        "column; header row found: Ad Soyad | Mail Adresi | İletişim; fix: check the header "
        'names in source mapped columns: (is "E-posta" spelled as in the file?)',
    ]
    assert run.stderr.strip().splitlines() == [f"leadflow: warning: {w}" for w in expected]
    summary = [ln.removeprefix("warning: ") for ln in run.stdout.splitlines()]
    assert [ln for ln in summary if ln in expected] == expected
    [(status, error, stats)] = quiet_files.runs()
    assert (status, error) == ("succeeded", None)
    found = _warnings(stats)
    assert [w["code"] for w in found["mapped"]] == ["unmapped_column", "mapped_header_missing"]
    assert not any(w["loses_data"] for ws in found.values() for w in ws)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_sources_inspect_shows_each_columns_field_and_samples_and_writes_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "yhteystiedot.csv").write_text(FINNISH, encoding="utf-8")
    (tmp_path / "in" / "mapped.csv").write_text(MAPPED, encoding="utf-8")
    (tmp_path / "in" / "photo.csv").write_bytes(PNG)
    before = _tree(tmp_path)
    # no config at all: the built-in aliases
    shown = leadflow(["sources", "inspect", "in"], env(tmp_path, PREFECT_HOME=None), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    assert _tree(tmp_path) == before and not (tmp_path / ".prefect").exists()
    blocks = shown.stdout.split("\n\n")
    mapped = blocks[0]
    assert mapped.splitlines()[0] == "mapped.csv: header row 1, 2 rows under it"
    assert "\nAd Soyad     full_name (alias)  Ada Demir | Can Ak" in mapped
    assert "\nMail Adresi  email (alias)      ada@demir.com.tr | can@ak.com.tr" in mapped
    assert "\nİletişim     - (seems phone)    0532 111 22 33 | 0533 222 33 44" in mapped
    assert (
        'warning: source <source>: mapped.csv: column "İletişim" maps to no field but seems to '
        'hold phone data; fix: add to source <source>: columns: {"İletişim": phone}'
    ) in mapped
    photo = blocks[1]
    assert photo.splitlines() == [
        "photo.csv: no table",
        "warning: source <source>: photo.csv: the file is a PNG image, not a CSV; "
        "fix: export the sheet as CSV or XLSX",
    ]
    finnish = blocks[2]
    assert finnish.splitlines()[0] == (
        "yhteystiedot.csv: no header row names a column leadflow knows; the likeliest, row 1, "
        "has 2 rows under it"
    )
    assert "\nSähköposti  - (seems email)  aino@virtanen.fi | mikko@korhonen.fi" in finnish
    assert "\nNimi        -                Aino Virtanen | Mikko Korhonen" in finnish

    # with a source of the config, its columns: map applies and names the source
    config = tmp_path / "leadflow.yaml"
    config.write_text(
        "warehouse: {url: 'sqlite:///w.db'}\nsources:\n  - {name: finland, kind: spreadsheet, "
        'path: in/yhteystiedot.csv, columns: {"Sähköposti": email, "Nimi": full_name}}\n',
        encoding="utf-8",
    )
    before = _tree(tmp_path)
    shown = leadflow(
        [
            "sources",
            "--config",
            str(config),
            "inspect",
            "in/yhteystiedot.csv",
            "--source",
            "finland",
        ],
        env(tmp_path, PREFECT_HOME=None),
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert _tree(tmp_path) == before and not (tmp_path / "w.db").exists()
    lines = shown.stdout.splitlines()
    assert lines[0] == "yhteystiedot.csv: header row 1, 2 rows under it"
    assert "Sähköposti  email (columns:)      aino@virtanen.fi | mikko@korhonen.fi" in lines
    assert (
        'warning: source finland: yhteystiedot.csv: column "Puhelin" maps to no field but '
        'seems to hold phone data; fix: add to source finland: columns: {"Puhelin": phone}'
    ) in lines
    export = leadflow(
        ["sources", "inspect", str(EXAMPLES / "webform_export.json")], env(tmp_path), cwd=tmp_path
    )
    assert export.returncode == 0, export.stderr
    lines = export.stdout.splitlines()
    assert lines[0] == "webform_export.json: 6 submissions, fields:"
    assert any(
        ln.startswith("submitted_at  received_at (alias)  2026-10-02T09:15:00Z") for ln in lines
    )
    missing = leadflow(["sources", "inspect", "nowhere"], env(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "leadflow: sources inspect: no such file or folder: nowhere"
