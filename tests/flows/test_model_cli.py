"""`leadflow model train / list / show / activate` and `rebuild --model` through the real CLI,
on a person register of names, addresses and birth dates (no email, no phone)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.clirun import env, leadflow
from tests.conftest import pg_database

GIVEN = "Hans Peter Klaus Anna Lena Ayşe Mehmet Elif Can John Emma Jürgen Zeynep Ali Maria".split()
SURNAMES = "Müller Schmidt Yılmaz Kaya Demir Weber Fischer Smith Öztürk Wagner Becker Koch".split()
STREETS = ["Hauptstraße", "Gartenweg", "Atatürk Caddesi", "High Street", "Lindenallee"]


def _register(path: Path, people: int = 900, seed: int = 5) -> int:
    """A register with about a third of its people recorded twice, the second time with the
    street written short or a letter of the surname dropped."""
    rnd = random.Random(seed)
    rows = []
    for i in range(people):
        row = [
            rnd.choice(GIVEN),
            rnd.choice(SURNAMES) + rnd.choice(["", "er", "mann", "oğlu"]),
            str(rnd.randint(1, 120)),
            rnd.choice(STREETS),
            f"{30000 + rnd.randint(0, 400):05d}",
            f"{rnd.randint(1940, 2005)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
        ]
        rows.append(row)
        if i % 3 == 0:
            again = list(row)
            again[3] = again[3].replace("straße", "str.").replace("Street", "St")
            if i % 2:
                again[1] = again[1][:2] + again[1][3:]
            rows.append(again)
    rnd.shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(
            ["given_name", "surname", "street_number", "address_1", "postcode", "date_of_birth"]
        )
        out.writerows(rows)
    return len(rows)


def test_train_show_activate_and_rebuild_with_a_model(tmp_path: Path, prefect_api_url: str) -> None:
    n = _register(tmp_path / "register.csv")
    with pg_database() as url:
        cfg = tmp_path / "leadflow.yaml"
        cfg.write_text(
            f"warehouse:\n  url: {url}\ndefault_region: DE\nsources:\n"
            f"  - name: register\n    kind: spreadsheet\n    path: {tmp_path / 'register.csv'}\n"
            f"    received_at: 2026-11-02\nquality:\n  docs_dir: {tmp_path / 'docs'}\n",
            encoding="utf-8",
        )
        environ = env(tmp_path, PREFECT_API_URL=prefect_api_url)
        run = leadflow(["run", "--config", str(cfg)], environ)
        assert run.returncode == 0, run.stderr[-2000:]
        engine = create_engine(url)

        def scalar(sql: str) -> object:
            with engine.connect() as conn:
                return conn.execute(text(sql)).scalar_one()

        # A register row with a name and an address is somebody: nothing is quarantined.
        assert scalar("select count(*) from contacts") == n
        assert scalar("select count(*) from rejects") == 0
        links_before = scalar("select count(distinct lead_id) from lead_links")

        train = leadflow(
            ["model", "train", "m-register", "--sample", "1100", "--config", str(cfg)], environ
        )
        assert train.returncode == 0, train.stderr[-2000:]
        assert "Model m-register trained on 1100 contacts" in train.stdout
        listed = leadflow(["model", "list", "--config", str(cfg)], environ)
        assert "m-register" in listed.stdout and "shipped with leadflow" in listed.stdout
        shown = leadflow(["model", "show", "m-register", "--config", str(cfg)], environ)
        assert shown.returncode == 0
        for comparison in ("first", "last", "address", "birth"):
            assert any(line.startswith(comparison) for line in shown.stdout.splitlines())
        assert "match_weight" in shown.stdout and "same street, number and postcode" in shown.stdout

        # Dry by default: what would change, nothing written.
        dry = leadflow(["rebuild", "--model", "m-register", "--config", str(cfg)], environ)
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert f"Resolving {n} contacts again with model m-register" in dry.stdout
        assert "Nothing written" in dry.stdout
        assert scalar("select count(*) from lead_links where model_version = 'm-register'") == 0
        assert scalar("select count(distinct lead_id) from lead_links") == links_before
        assert scalar("select count(*) from match_models where active") == 0

        applied = leadflow(
            ["rebuild", "--model", "m-register", "--apply", "--config", str(cfg)], environ
        )
        assert applied.returncode == 0, applied.stderr[-2000:]
        assert scalar("select version from match_models where active") == "m-register"
        assert scalar("select count(*) from lead_links where model_version <> 'm-register'") == 0
        # Every contact is still linked, every lead still whole.
        assert scalar("select count(*) from lead_links") == n
        assert scalar("select count(*) from leads") == scalar(
            "select count(distinct lead_id) from lead_links"
        )

        unknown = leadflow(["model", "activate", "nosuch", "--config", str(cfg)], environ)
        assert unknown.returncode == 2 and "no model version 'nosuch'" in unknown.stderr
        engine.dispose()
