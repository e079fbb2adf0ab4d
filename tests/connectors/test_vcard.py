"""vCard files as iOS, Android, Google and Outlook write them: cards, encodings, photos, junk."""

from __future__ import annotations

import base64
import os
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.vcard import iter_vcard
from tests.connectors.conftest import land_source, rows_of
from transforms.normalize import NormalizeOptions, normalize_contact
from transforms.records import Contact, RawRow, Reject, raw_id_for
from transforms.vcard import unfold, vcard_fields
from warehouse.schema import contacts, raw_contacts, rejects

CRLF = "\r\n"
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40).decode()


def fold(line: str, width: int = 75, indent: str = " ") -> str:
    """A content line folded as RFC 6350 writers do: at `width` octets, continued by a space."""
    parts = [line[:width]] + [line[i : i + width - 1] for i in range(width, len(line), width - 1)]
    return (CRLF + indent).join(parts)


def qp(text: str) -> str:
    return "".join(
        c if 32 < ord(c) < 127 and c not in "=;" else "".join(f"={b:02X}" for b in c.encode())
        for c in text
    )


IOS = CRLF.join(
    [
        "BEGIN:VCARD",
        "VERSION:3.0",
        "PRODID:-//Apple Inc.//iPhone OS 17.4//EN",
        "N:Yılmaz;Ayşe;;;",
        "FN:Ayşe Yılmaz",
        "ORG:Yılmaz Tekstil A.Ş.;Satış",
        "TITLE:Satış Müdürü",
        "item1.EMAIL;type=INTERNET;type=pref:ayse@yilmaztekstil.com.tr",
        "item1.X-ABLabel:_$!<Work>!$_",
        "item2.EMAIL;type=INTERNET:ayse.yilmaz@gmail.com",
        "item2.X-ABLabel:_$!<Home>!$_",
        "TEL;type=CELL;type=VOICE;type=pref:+90 532 111 22 33",
        "TEL;type=WORK;type=VOICE:+90 212 345 67 89",
        "item3.ADR;type=WORK;type=pref:;;Büyükdere Cad. 1;İstanbul;;34394;Türkiye",
        "item3.X-ABADR:tr",
        "NOTE:Met at the fair\\nwants a quote",
        "BDAY;value=date:1985-04-12",
        fold("PHOTO;ENCODING=b;TYPE=JPEG:" + JPEG),
        "END:VCARD",
        "BEGIN:VCARD",
        "VERSION:3.0",
        "N:Kaya;Deniz;;;",
        "FN:Deniz Kaya",
        "TEL;type=CELL;type=VOICE;type=pref:0533 765 43 21",
        "END:VCARD",
        "",
    ]
)

ANDROID = CRLF.join(
    [
        "BEGIN:VCARD",
        "VERSION:2.1",
        "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:" + qp("Öztürk") + ";" + qp("Çağrı") + ";;;",
        "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:" + qp("Çağrı Öztürk"),
        "TEL;CELL:+905334445566",
        "TEL;WORK:02324567890",
        "EMAIL;HOME:cagri@ozturkgida.com.tr",
        # a long quoted-printable value, soft-broken with "=" at the end of each line
        "ORG;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:"
        + qp("Öztürk Gıda San.")
        + "="
        + CRLF
        + qp(" ve Tic. A.Ş."),
        "ADR;WORK;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:;;"
        + qp("Kıbrıs Şehitleri Cad. 5;İzmir;;35220;Türkiye"),
        "PHOTO;ENCODING=BASE64;JPEG:" + JPEG[:76],
        *("  " + JPEG[i : i + 76] for i in range(76, len(JPEG), 76)),
        "",
        "END:VCARD",
        "",
    ]
)

GOOGLE = CRLF.join(
    [
        "BEGIN:VCARD",
        "VERSION:3.0",
        "FN:Mia Wong",
        "N:Wong;Mia;;;",
        "EMAIL;TYPE=INTERNET;TYPE=WORK:mia@wong.example.com",
        "TEL;TYPE=CELL:+1 212 555 0100",
        "ADR;TYPE=WORK:;;1 Main St;New York;NY;10001;United States",
        "ORG:Wong LLC",
        "TITLE:CEO",
        "item1.URL:https\\://wong.example.com",
        "item1.X-ABLabel:",
        "CATEGORIES:myContacts",
        "END:VCARD",
        "BEGIN:VCARD",
        "VERSION:3.0",
        "FN:Jonas Weber",
        "N:Weber;Jonas;;;",
        "EMAIL;TYPE=INTERNET:jonas.weber@weber-logistik.de",
        "ORG:Weber Logistik GmbH",
        "NOTE:Rückruf\\, bitte",
        "CATEGORIES:myContacts,Fair 2026",
        "END:VCARD",
        "",
    ]
)


def outlook_bytes() -> bytes:
    lines = [
        "BEGIN:VCARD",
        "VERSION:2.1",
        "N;LANGUAGE=de;CHARSET=Windows-1252:Müller;Hans",
        "FN;CHARSET=Windows-1252:Hans Müller",
        "ORG;CHARSET=Windows-1252:Müller Maschinenbau GmbH",
        "TITLE:Einkaufsleiter",
        "TEL;WORK;VOICE:+49 711 1234567",
        "TEL;CELL;VOICE:+49 170 1234567",
        "ADR;WORK;PREF;CHARSET=Windows-1252:;;Industriestraße 3;Stuttgart;;70173;Deutschland",
        "LABEL;WORK;PREF;ENCODING=QUOTED-PRINTABLE:Industriestra=DFe 3=0D=0A70173 Stuttgart",
        "URL;WORK:http://www.mueller-maschinenbau.de",
        "EMAIL;PREF;INTERNET:hans.mueller@mueller-maschinenbau.de",
        "PHOTO;TYPE=JPEG;ENCODING=BASE64:",
        *(" " + JPEG[i : i + 76] for i in range(0, len(JPEG), 76)),
        "",
        "X-MS-OL-DEFAULT-POSTAL-ADDRESS:2",
        "REV:20260305T101500Z",
        "END:VCARD",
        "",
    ]
    return CRLF.join(lines).encode("cp1252")


V4 = CRLF.join(
    [
        "BEGIN:VCARD",
        "VERSION:4.0",
        "FN:Elif Şahin",
        "N:Şahin;Elif;;;",
        'TEL;VALUE=uri;TYPE="voice,work":tel:+90-212-345-67-00',
        'TEL;VALUE=uri;TYPE="voice,cell";PREF=1:tel:+90-532-123-45-67',
        "EMAIL;TYPE=work;PREF=1:elif.sahin@sahinmakina.com.tr",
        "EMAIL;TYPE=home:elif.sahin@example.org",
        "ORG:Şahin Makina A.Ş.",
        "PHOTO:data:image/jpeg;base64," + JPEG,
        "BDAY:19900630",
        "REV:2026-03-05T10:15:00+03:00",
        "END:VCARD",
        "",
    ]
)

OPTS = NormalizeOptions(default_region="TR")


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    old = datetime(2026, 3, 1, 9, 0, tzinfo=UTC).timestamp()
    os.utime(path, (old, old))  # settled: written well before it is read
    return path


def read(
    path: Path,
    cursor: dict[str, Any] | None = None,
    now: datetime | None = None,
    landed: dict[str, str] | None = None,
) -> tuple[list[Any], list[Any]]:
    batches = list(iter_vcard("cards", str(path), cursor, now=now or FIRST_READ, landed=landed))
    return [r for b in batches for r in b.records], [j for b in batches for j in b.rejects]


def normalized(rec: Any) -> Contact | Reject:
    row = RawRow(
        raw_id_for(rec.source, rec.source_record_id),
        rec.source,
        rec.source_kind,
        rec.source_record_id,
        rec.received_at,
        rec.payload,
    )
    return normalize_contact(row, OPTS)


def contact_of(rec: Any) -> Contact:
    c = normalized(rec)
    assert isinstance(c, Contact), c
    return c


FIRST_READ = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)


def test_an_ios_export_lands_each_card_with_its_preferred_email_and_phone(tmp_path: Path) -> None:
    records, found = read(write(tmp_path / "iCloud.vcf", IOS))
    assert found == []
    assert [r.payload["card"] for r in records] == [1, 2]
    ayse, deniz = map(contact_of, records)
    assert (ayse.first_name, ayse.last_name, ayse.full_name) == ("Ayşe", "Yılmaz", "Ayşe Yılmaz")
    assert (ayse.email, ayse.other_emails) == (
        "ayse@yilmaztekstil.com.tr",
        ("ayse.yilmaz@gmail.com",),
    )
    assert (ayse.phone, ayse.other_phones) == ("+905321112233", ("+902123456789",))
    assert (ayse.company, ayse.job_title) == ("Yılmaz Tekstil A.Ş.", "Satış Müdürü")
    assert (ayse.street, ayse.city, ayse.postal_code, ayse.country) == (
        "Büyükdere Cad. 1",
        "İstanbul",
        "34394",
        "TR",
    )
    assert ayse.message == "Met at the fair wants a quote"
    assert str(ayse.birth_date) == "1985-04-12"
    # the photo streamed past: only a note of its size is kept
    assert "PHOTO" not in records[0].payload["vcard"]
    assert records[0].payload["skipped"]["PHOTO"] > len(JPEG)
    assert (deniz.full_name, deniz.phone) == ("Deniz Kaya", "+905337654321")
    # no REV: dated by when the file's content was first landed
    assert {r.received_at for r in records} == {FIRST_READ}


def test_an_android_export_decodes_quoted_printable_and_skips_the_2_1_photo(tmp_path: Path) -> None:
    records, found = read(write(tmp_path / "00001.vcf", ANDROID))
    assert found == []
    [rec] = records
    c = contact_of(rec)
    assert (c.first_name, c.last_name) == ("Çağrı", "Öztürk")
    assert c.company == "Öztürk Gıda San. ve Tic. A.Ş."
    assert (c.phone, c.other_phones) == ("+905334445566", ("+902324567890",))
    assert c.email == "cagri@ozturkgida.com.tr"
    assert (c.street, c.city, c.postal_code, c.country) == (
        "Kıbrıs Şehitleri Cad. 5",
        "İzmir",
        "35220",
        "TR",
    )
    assert "PHOTO" not in rec.payload["vcard"] and rec.payload["skipped"]["PHOTO"] > len(JPEG)


def test_a_google_export_unescapes_and_reads_grouped_properties(tmp_path: Path) -> None:
    records, found = read(write(tmp_path / "contacts.vcf", GOOGLE))
    assert found == []
    mia, jonas = map(contact_of, records)
    assert (mia.email, mia.phone, mia.company, mia.job_title) == (
        "mia@wong.example.com",
        "+12125550100",
        "Wong LLC",
        "CEO",
    )
    assert (mia.city, mia.region, mia.postal_code, mia.country) == ("New York", "NY", "10001", "US")
    assert mia.company_domain == "wong.example.com"  # from item1.URL, "\:" unescaped
    assert (jonas.email, jonas.company, jonas.message) == (
        "jonas.weber@weber-logistik.de",
        "Weber Logistik GmbH",
        "Rückruf, bitte",
    )


def test_an_outlook_export_in_windows_1252_is_dated_by_its_rev(tmp_path: Path) -> None:
    records, found = read(write(tmp_path / "Hans Müller.vcf", outlook_bytes()))
    assert found == []
    [rec] = records
    c = contact_of(rec)
    assert (c.first_name, c.last_name, c.company) == ("Hans", "Müller", "Müller Maschinenbau GmbH")
    assert (c.email, c.phone, c.other_phones) == (
        "hans.mueller@mueller-maschinenbau.de",
        "+497111234567",
        ("+491701234567",),
    )
    assert (c.street, c.city, c.postal_code, c.country) == (
        "Industriestraße 3",
        "Stuttgart",
        "70173",
        "DE",
    )
    assert rec.received_at == datetime(2026, 3, 5, 10, 15, tzinfo=UTC)
    assert vcard_fields(rec.payload["vcard"])["received_at"] == "2026-03-05T10:15:00+00:00"


def test_a_4_0_card_reads_tel_uris_pref_and_a_data_uri_photo(tmp_path: Path) -> None:
    [rec], found = read(write(tmp_path / "v4.vcf", V4))
    assert found == []
    c = contact_of(rec)
    assert (c.phone, c.other_phones) == ("+905321234567", ("+902123456700",))
    assert (c.email, c.other_emails) == (
        "elif.sahin@sahinmakina.com.tr",
        ("elif.sahin@example.org",),
    )
    assert str(c.birth_date) == "1990-06-30"
    assert rec.received_at == datetime(2026, 3, 5, 7, 15, tzinfo=UTC)
    assert "base64" not in rec.payload["vcard"]


def test_base64_text_values_are_decoded_in_their_charset(tmp_path: Path) -> None:
    """Text written as base64 (3.0 `ENCODING=b`, 2.1 `ENCODING=BASE64`, folded or not) is read as
    its text; only binary properties are skipped."""

    def b64(text: str, charset: str = "utf-8") -> str:
        return base64.b64encode(text.encode(charset)).decode()

    note = "Fuarda tanıştık; fiyat teklifi istiyor, Nisan'da demo. " * 3
    text = CRLF.join(
        [
            "BEGIN:VCARD",
            "VERSION:3.0",
            "FN;ENCODING=b;CHARSET=UTF-8:" + b64("Çağrı Öztürk"),
            "N:Öztürk;Çağrı;;;",
            "EMAIL:cagri@ozturkgida.com.tr",
            fold("NOTE;ENCODING=b:" + b64(note)),
            "END:VCARD",
            "BEGIN:VCARD",
            "VERSION:2.1",
            "N;CHARSET=Windows-1254;ENCODING=BASE64:" + b64("Şahin;İsmail", "cp1254"),
            "ORG;ENCODING=BASE64;CHARSET=UTF-8:" + b64("Şahin Makina A.Ş."),
            "TEL;CELL:+905321234567",
            "END:VCARD",
            "",
        ]
    )
    records, found = read(write(tmp_path / "b64.vcf", text))
    assert found == []
    cagri, ismail = map(contact_of, records)
    assert (cagri.full_name, cagri.email) == ("Çağrı Öztürk", "cagri@ozturkgida.com.tr")
    assert cagri.message == note.strip()
    assert (ismail.first_name, ismail.last_name, ismail.company) == (
        "İsmail",
        "Şahin",
        "Şahin Makina A.Ş.",
    )
    assert "skipped" not in records[0].payload and "skipped" not in records[1].payload


def test_a_utf16_file_and_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    records, found = read(write(tmp_path / "u16.vcf", GOOGLE.encode("utf-16")))
    assert found == [] and [contact_of(r).email for r in records] == [
        "mia@wong.example.com",
        "jonas.weber@weber-logistik.de",
    ]
    records, found = read(write(tmp_path / "bom.vcf", b"\xef\xbb\xbf" + GOOGLE.encode()))
    assert found == [] and len(records) == 2


def test_folded_lines_join_and_quoted_printable_soft_breaks_join() -> None:
    folded = fold("NOTE:" + "x" * 200)
    assert unfold("BEGIN:VCARD\r\n" + folded + "\r\nEND:VCARD") == [
        "BEGIN:VCARD",
        "NOTE:" + "x" * 200,
        "END:VCARD",
    ]
    card = "N;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:=C3=96z=\r\nt=C3=BCrk;Can\r\n"
    assert vcard_fields(card) == {"last_name": "Öztürk", "first_name": "Can"}


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "one-line"])
def test_a_multi_megabyte_photo_is_skipped_without_being_held(tmp_path: Path, folded: bool) -> None:
    photo = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()  # 8 MB of base64
    line = "PHOTO;ENCODING=b;TYPE=JPEG:" + photo
    card = CRLF.join(
        [
            "BEGIN:VCARD",
            "VERSION:3.0",
            "FN:Big Photo",
            "EMAIL:big.photo@example.com",
            fold(line) if folded else line,
            "END:VCARD",
            "",
        ]
    )
    path = write(tmp_path / "big.vcf", card * 2)
    del photo, line, card
    tracemalloc.start()
    try:
        records, found = read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == [] and len(records) == 2
    assert records[0].payload["skipped"]["PHOTO"] > 8_000_000
    # the fingerprint reads 1 MiB at a time, the parser 64 KiB: far below the 16 MB file
    assert peak < 3 * 1024 * 1024, f"peak {peak} bytes while reading a 16 MB file"


def test_malformed_cards_are_quarantined_with_a_reason_and_the_rest_lands(tmp_path: Path) -> None:
    text = CRLF.join(
        [
            "some export banner",
            "BEGIN:VCARD",
            "VERSION:3.0",
            "FN:Good One",
            "EMAIL:good.one@example.com",
            "END:VCARD",
            "BEGIN:VCARD",
            "VERSION:3.0",
            "FN:No End",
            "EMAIL:no.end@example.com",
            "BEGIN:VCARD",
            "VERSION:3.0",
            "FN:Broken Line",
            "this is not a property",
            "EMAIL:broken@example.com",
            "END:VCARD",
            "BEGIN:VCARD",
            "VERSION:3.0",
            "NOTE:nobody",
            "END:VCARD",
            "BEGIN:VCARD",
            "VERSION:2.1",
            "FN:Cut Short",
            "",
        ]
    )
    records, found = read(write(tmp_path / "bad.vcf", text))
    assert [(j.source_record_id, j.code) for j in found] == [
        ("bad.vcf:card2:line7", "vcard_unterminated"),
        ("bad.vcf:card3:line11", "vcard_malformed"),
        ("bad.vcf:card5:line21", "vcard_unterminated"),
        ("bad.vcf:line1", "vcard_stray_text"),
    ]
    assert "line 14 is not a property" in found[1].message
    assert [r.payload["card"] for r in records] == [1, 4]
    good, nobody = map(normalized, records)
    assert isinstance(good, Contact) and good.email == "good.one@example.com"
    # a card that names nobody is normalize's reject, with why
    assert isinstance(nobody, Reject) and nobody.code == "no_identity"


def test_a_card_without_rev_keeps_the_date_its_content_was_first_landed(tmp_path: Path) -> None:
    """Never the file's modification time: a touch, a copy or a clone moves no date."""
    first = write(tmp_path / "iCloud.vcf", IOS)
    batches = list(iter_vcard("cards", str(first), None, now=FIRST_READ))
    cursor = batches[-1].cursor
    later = datetime(2026, 6, 1, tzinfo=UTC)
    # a copy under another name (and another mtime), read by the same source later
    copy = tmp_path / "copy" / "contacts.vcf"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    os.utime(copy, (later.timestamp(), later.timestamp()))
    records, _ = read(copy, cursor, now=later)
    assert {r.received_at for r in records} == {FIRST_READ}
    # a backfill reads without the cursor but with its first-landed times
    records, _ = read(first, None, now=later, landed=cursor["first_landed"])
    assert {r.received_at for r in records} == {FIRST_READ}
    # a card's own REV still wins
    records, _ = read(write(tmp_path / "v4.vcf", V4), cursor, now=later)
    assert [r.received_at for r in records] == [datetime(2026, 3, 5, 7, 15, tzinfo=UTC)]


def test_a_folder_lands_once_and_an_edited_card_lands_as_one_new_record(tmp_path: Path) -> None:
    folder = tmp_path / "cards"
    folder.mkdir()
    write(folder / "a.vcf", GOOGLE)
    write(folder / "b.vcf", IOS)
    write(folder / "notes.txt", "not a card file")
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        f"sources:\n  - name: cards\n    kind: vcard\n    path: {folder}\n"
    )
    first = land_source(cfg, "cards")
    assert (first["landed"], first["rejected"], first["reconciled"]) == (4, 0, 1)
    assert land_source(cfg, "cards")["seen"] == 0  # unchanged files are not read again

    write(folder / "a.vcf", GOOGLE.replace("TITLE:CEO", "TITLE:Founder"))
    third = land_source(cfg, "cards")
    assert (third["seen"], third["landed"], third["already_landed"]) == (2, 1, 1)
    kinds = rows_of(cfg, raw_contacts.c.source_kind)
    assert kinds == [("vcard",)] * 5
    assert rows_of(cfg, rejects.c.reject_id) == [] and rows_of(cfg, contacts.c.contact_id) == []


def test_a_glob_picks_the_matching_files(tmp_path: Path) -> None:
    write(tmp_path / "one.vcf", GOOGLE)
    write(tmp_path / "two.VCF", V4)
    write(tmp_path / "three.vcard", IOS)
    records, _ = read(tmp_path / "*.vcf")
    assert {r.payload["file"] for r in records} == {"one.vcf"}
    records, cursor_found = read(tmp_path)
    assert {r.payload["file"] for r in records} == {"one.vcf", "two.VCF", "three.vcard"}


def test_a_run_turns_cards_into_contacts_with_their_other_numbers(
    prefect_api: None, warehouse_url: str, tmp_path: Path
) -> None:
    from flows.cli import main
    from tests.conftest import write_config
    from warehouse import db

    folder = tmp_path / "cards"
    folder.mkdir()
    write(folder / "phone.vcf", IOS + V4)
    write(folder / "outlook.vcf", outlook_bytes())
    cfg = write_config(
        tmp_path / "leadflow.yaml",
        warehouse_url,
        f"quality:\n  docs_dir: {tmp_path / 'docs'}\n"
        f"sources:\n  - name: cards\n    kind: vcard\n    path: {folder}\n",
    )
    assert main(["run", "--config", str(cfg)]) == 0
    engine = db.make_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                contacts.select().with_only_columns(
                    contacts.c.email,
                    contacts.c.phone,
                    contacts.c.other_phones,
                    contacts.c.source_kind,
                    contacts.c.received_at,
                )
            ).all()
    finally:
        engine.dispose()
    got = sorted(got, key=lambda r: r.email or "~")  # NULLs sort differently per dialect
    assert [(r.email, r.phone, list(r.other_phones or []), r.source_kind) for r in got] == [
        ("ayse@yilmaztekstil.com.tr", "+905321112233", ["+902123456789"], "vcard"),
        ("elif.sahin@sahinmakina.com.tr", "+905321234567", ["+902123456700"], "vcard"),
        ("hans.mueller@mueller-maschinenbau.de", "+497111234567", ["+491701234567"], "vcard"),
        (None, "+905337654321", [], "vcard"),
    ]
    # a card's REV is its received time
    hans = next(r for r in got if r.email and r.email.startswith("hans"))
    assert db_utc(hans.received_at) == datetime(2026, 3, 5, 10, 15, tzinfo=UTC)


def db_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
