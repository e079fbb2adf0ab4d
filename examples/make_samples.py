"""Writes the bundled sample sources in examples/sources (run again to regenerate them)."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

from openpyxl import Workbook

OUT = Path(__file__).with_name("sources")

CSV = """\
Ad Soyad;E-posta;Telefon;Şirket;Ünvan;Şehir;Ülke;Bütçe;Zamanlama;İlgi Alanı;KVKK Onayı
İSMAİL IŞIK;ismail.isik@isiktekstil.com.tr;0532 111 22 33;Işık Tekstil San. ve Tic. A.Ş.;Genel Müdür;İstanbul;Türkiye;250.000 TL;3 ay içinde;Forklift filosu için teklif;Evet
ayşe yılmaz;Ayse.Yilmaz@gmail.com;;;;Ankara;Turkey;;;Depo raf sistemleri;Evet
Can Öztürk;;0505 222 33 44;Öztürk İnşaat Ltd. Şti.;Satın Alma Müdürü;İzmir;TR;1,2 milyon TL;6 ay;Vinç kiralama fiyat;Evet
Mehmet Kaya;mehmet.kaya@mailinator.com;;;;Bursa;Türkiye;;;;Evet
test;;;;;;;;;;
Zeynep Arslan;zeynep(at)arslanmimarlik;;Arslan Mimarlık;Mimar;İstanbul;Türkiye;;;;Hayır
;info@karadeniz-gida.com.tr;;Karadeniz Gıda A.Ş.;;Trabzon;Türkiye;;;;
Emre Çelik;emre.celik@celiklojistik.com.tr;+90 (216) 444 55 66;Çelik Lojistik;Operasyon Şefi;İstanbul;Türkiye;;;Bilgi almak istiyorum;Evet;fazla;hücre
"""

SHEET_ROWS = [
    ["Partner leads – Hannover Messe 2026", None, None, None, None, None, None, None],
    [None] * 8,
    ["Name", "E-Mail", "Telefon", "Firma", "Position", "Land", "Budget", "Zeitrahmen"],
    [
        "Weiß, Jürgen",
        "J.Weiss@weiss-maschinenbau.de",
        "0171 2345678",
        "Weiß Maschinenbau GmbH",
        "Geschäftsführer",
        "Deutschland",
        "80.000 €",
        "innerhalb 2 Monate",
    ],
    ["Hans Müller", None, "+49 171 9876543", None, None, "Germany", None, None],
    [
        "HANS MÜLLER",
        None,
        "0171 9876543",
        "Müller & Söhne KG",
        "Inhaber",
        "Deutschland",
        None,
        None,
    ],
    [
        "Maria Schneider",
        "maria.schneider@schneider-logistik.de",
        "+49 40 1234567",
        "Schneider Logistik GmbH",
        "Leiterin Einkauf",
        "Deutschland",
        None,
        None,
    ],
    [
        "John Smith",
        "john@acme-corp.com",
        "+1 415 555 0132",
        "Acme Corp Inc.",
        "CEO",
        "USA",
        "$40,000",
        "1 month",
    ],
    [None, None, None, "Nur Firma GmbH", None, "Deutschland", None, None],
]

FORMS = [
    {
        "id": "wf-1001",
        "submitted_at": "2026-10-02T09:15:00Z",
        "fields": {
            "name": "Ismail Isik",
            "email": "ISMAIL.ISIK@isiktekstil.com.tr",
            "phone": "+90 532 111 2233",
            "company": "Işık Tekstil",
            "message": "Fiyat teklifi bekliyoruz, 3 ay içinde satın alacağız.",
            "consent": True,
        },
    },
    {
        "id": "wf-1002",
        "submitted_at": "2026-10-05T14:02:11Z",
        "fields": {
            "name": "Ayse Yilmaz",
            "email": "ayseyilmaz+web@googlemail.com",
            "message": "Raf sistemleri hakkında bilgi",
            "consent": True,
        },
    },
    {
        "id": "wf-1003",
        "submitted_at": "2026-10-07T08:40:00Z",
        "fields": {
            "name": "John Smith",
            "email": "john@acme-corp.com",
            "title": "CEO",
            "company": "ACME Corp",
            "budget": "$40,000",
            "timeline": "within 1 month",
            "message": "We want a demo and pricing for 20 units.",
            "consent": True,
        },
    },
    {
        "id": "wf-1004",
        "submitted_at": "2026-10-09T19:22:00Z",
        "fields": {
            "name": "Can Ozturk",
            "phone": "+905052223344",
            "message": "Vinç kiralama için teklif",
            "consent": True,
        },
    },
    {
        "id": "wf-1005",
        "submitted_at": "2026-10-11T03:10:00Z",
        "fields": {
            "name": "Best SEO",
            "email": "promo@seo-boost.biz",
            "message": "Cheap SEO services and backlinks for your site!",
        },
    },
    {
        "id": "wf-1006",
        "submitted_at": "2026-10-12T10:00:00Z",
        "fields": {"name": "", "email": "", "message": "hello?"},
    },
    {"submitted_at": "2026-10-13T10:00:00Z", "fields": {"name": "No Id"}},
]


def _mail(
    sender: tuple[str, str],
    subject: str,
    body: str,
    when: datetime,
    mid: str,
    reply_to: tuple[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr(sender)
    msg["To"] = "sales@ourcompany.com"
    if reply_to:
        msg["Reply-To"] = formataddr(reply_to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = mid
    msg.set_content(body)
    return msg


def main() -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "fair_istanbul_2026.csv").write_text(CSV, encoding="utf-8")
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Leads"
    for row in SHEET_ROWS:
        ws.append(row)
    wb.save(OUT / "partners_hannover.xlsx")
    (OUT / "webform_export.json").write_text(
        json.dumps({"submissions": FORMS}, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    path = OUT / "sales_inbox.mbox"
    path.unlink(missing_ok=True)
    box = mailbox.mbox(str(path))
    d = lambda day, h: datetime(2026, 10, day, h, 0, tzinfo=UTC)  # noqa: E731
    box.add(
        _mail(
            ("Jürgen Weiß", "j.weiss@weiss-maschinenbau.de"),
            "Anfrage Angebot",
            "Guten Tag,\nbitte senden Sie uns ein Angebot für 3 Anlagen.\n"
            "Mit freundlichen Grüßen\nJürgen Weiß\nGeschäftsführer\nTel.: +49 171 2345678",
            d(3, 9),
            "<a1@weiss-maschinenbau.de>",
        )
    )
    box.add(
        _mail(
            ("John Smith", "John@Acme-Corp.com"),
            "Re: pricing",
            "Hi, following up on the demo request.\nJohn Smith, CEO\nPhone: +1 415 555 0132",
            d(8, 16),
            "<b2@acme-corp.com>",
        )
    )
    box.add(
        _mail(
            ("Web Sitesi", "noreply@ourcompany.com"),
            "Yeni form başvurusu",
            "Ad Soyad: Elif Demir\nE-posta: elif.demir@demirlojistik.com\n"
            "Telefon: 0216 555 44 33\nŞirket: Demir Lojistik Ltd. Şti.\n"
            "Ünvan: Satın Alma Müdürü\nBütçe: 500.000 TL\nZamanlama: 2 ay\n"
            "Mesaj: Depo otomasyonu için fiyat teklifi istiyoruz.",
            d(10, 11),
            "<c3@ourcompany.com>",
        )
    )
    box.add(
        _mail(
            ("Maria Schneider", "maria.schneider@schneider-logistik.de"),
            "Interesse an Ihren Produkten",
            "Hallo, wir haben Interesse und bitten um Informationen.\nMaria Schneider",
            d(14, 8),
            "<d4@schneider-logistik.de>",
        )
    )
    box.add(
        _mail(
            ("Mail Delivery System", "mailer-daemon@ourcompany.com"),
            "Undelivered Mail Returned to Sender",
            "This is the mail system.",
            d(15, 1),
            "<e5@ourcompany.com>",
        )
    )
    box.flush()
    box.close()


if __name__ == "__main__":
    main()
