"""Exports in the vendors' own column layouts: each file lands every carried field on its contact.

Each layout is written as a file the way the tool exports it (its documented header row, the
preamble where there is one), read by the spreadsheet connector, normalized, and compared with
what the row carries. The date column each layout has is the one its records are dated by.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import TableShape
from connectors.spreadsheet import iter_spreadsheet
from flows.settings import SpreadsheetSource
from flows.sources import row_dating
from transforms.columns import check_table, map_columns
from transforms.fields import (
    ALIASES,
    CANONICAL,
    IGNORE,
    canonical_field,
    detect_layout,
    header_key,
    header_scorer,
    known_header,
    layouts,
    map_fields,
)
from transforms.normalize import NormalizeOptions, normalize_contact
from transforms.records import Contact, RawRow, raw_id_for

FIXTURES = Path(__file__).parent.parent / "fixtures"
OPTS = NormalizeOptions(default_region="TR")
NAME_FIELDS = ("first_name", "last_name", "full_name")
FIRST_LANDED = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass(frozen=True)
class Layout:
    name: str  # the layout in header_aliases.csv
    header: list[str]
    row: list[str]
    expect: dict[str, Any]  # Contact attribute → value
    dated: str | None  # the row's own date, as UTC ISO; None: the layout has no date column
    preamble: str = ""
    delimiter: str = ","
    # form exports: a few fixed columns and the form's own questions, read by their words; the
    # fixed columns may be too few to tell the tool
    form: bool = False
    unmapped: tuple[str, ...] = ()  # columns that carry nothing a contact holds, warned about


# Contact-book exports carry every column of their format, empty or not: the full header rows.
GOOGLE_CONTACTS = (
    "First Name,Middle Name,Last Name,Phonetic First Name,Phonetic Middle Name,"
    "Phonetic Last Name,Name Prefix,Name Suffix,Nickname,File As,Organization Name,"
    "Organization Title,Organization Department,Birthday,Notes,Photo,Labels,E-mail 1 - Label,"
    "E-mail 1 - Value,E-mail 2 - Label,E-mail 2 - Value,Phone 1 - Label,Phone 1 - Value,"
    "Phone 2 - Label,Phone 2 - Value,Address 1 - Label,Address 1 - Formatted,Address 1 - Street,"
    "Address 1 - City,Address 1 - PO Box,Address 1 - Region,Address 1 - Postal Code,"
    "Address 1 - Country,Address 1 - Extended Address"
).split(",")
GOOGLE_CONTACTS_LEGACY = (
    "Name,Given Name,Additional Name,Family Name,Yomi Name,Given Name Yomi,"
    "Additional Name Yomi,Family Name Yomi,Name Prefix,Name Suffix,Initials,Nickname,Short Name,"
    "Maiden Name,Birthday,Gender,Location,Billing Information,Directory Server,Mileage,Occupation,"
    "Hobby,Sensitivity,Priority,Subject,Notes,Language,Photo,Group Membership,E-mail 1 - Type,"
    "E-mail 1 - Value,E-mail 2 - Type,E-mail 2 - Value,Phone 1 - Type,Phone 1 - Value,"
    "Phone 2 - Type,Phone 2 - Value,Phone 3 - Type,Phone 3 - Value,Address 1 - Type,"
    "Address 1 - Formatted,Address 1 - Street,Address 1 - City,Address 1 - PO Box,"
    "Address 1 - Region,Address 1 - Postal Code,Address 1 - Country,Address 1 - Extended Address,"
    "Organization 1 - Type,Organization 1 - Name,Organization 1 - Yomi Name,"
    "Organization 1 - Title,Organization 1 - Department,Organization 1 - Symbol,"
    "Organization 1 - Location,Organization 1 - Job Description"
).split(",")
OUTLOOK_CONTACTS = (
    "Title,First Name,Middle Name,Last Name,Suffix,Company,Department,Job Title,Business Street,"
    "Business Street 2,Business Street 3,Business City,Business State,Business Postal Code,"
    "Business Country/Region,Home Street,Home Street 2,Home Street 3,Home City,Home State,"
    "Home Postal Code,Home Country/Region,Other Street,Other Street 2,Other Street 3,Other City,"
    "Other State,Other Postal Code,Other Country/Region,Assistant's Phone,Business Fax,"
    "Business Phone,Business Phone 2,Callback,Car Phone,Company Main Phone,Home Fax,Home Phone,"
    "Home Phone 2,ISDN,Mobile Phone,Other Fax,Other Phone,Pager,Primary Phone,Radio Phone,"
    "TTY/TDD Phone,Telex,Account,Anniversary,Assistant's Name,Billing Information,Birthday,"
    "Business Address PO Box,Categories,Children,Directory Server,E-mail Address,E-mail Type,"
    "E-mail Display Name,E-mail 2 Address,E-mail 2 Type,E-mail 2 Display Name,E-mail 3 Address,"
    "E-mail 3 Type,E-mail 3 Display Name,Gender,Government ID Number,Hobby,Home Address PO Box,"
    "Initials,Internet Free Busy,Keywords,Language,Location,Manager's Name,Mileage,Notes,"
    "Office Location,Organizational ID Number,Other Address PO Box,Priority,Private,Profession,"
    "Referred By,Sensitivity,Spouse,User 1,User 2,User 3,User 4,Web Page"
).split(",")


def cells(header: list[str], values: dict[str, str]) -> list[str]:
    """A row of `header` holding `values`, every other cell empty."""
    assert set(values) <= set(header), set(values) - set(header)
    return [values.get(h, "") for h in header]


LAYOUTS = [
    Layout(
        "salesforce-lead-report",
        "Lead Owner,Salutation,First Name,Last Name,Title,Company / Account,Email,Phone,Mobile,"
        "Street,City,State/Province,Zip/Postal Code,Country,Lead Source,Lead Status,Rating,"
        "Create Date".split(","),
        [
            "Ayla Demir",
            "Ms.",
            "Elif",
            "Şahin",
            "Purchasing Manager",
            "Şahin Makina A.Ş.",
            "elif.sahin@sahinmakina.com.tr",
            "+90 212 345 67 89",
            "+90 532 123 45 67",
            "Büyükdere Cad. 1",
            "İstanbul",
            "İstanbul",
            "34394",
            "Turkey",
            "Trade Show",
            "Open - Not Contacted",
            "Hot",
            "05/03/2026",
        ],
        {
            "first_name": "Elif",
            "last_name": "Şahin",
            "email": "elif.sahin@sahinmakina.com.tr",
            "phone": "+902123456789",
            "other_phones": ("+905321234567",),
            "company": "Şahin Makina A.Ş.",
            "job_title": "Purchasing Manager",
            "street": "Büyükdere Cad. 1",
            "city": "İstanbul",
            "region": "İstanbul",
            "postal_code": "34394",
            "country": "TR",
        },
        "2026-03-05T00:00:00+00:00",
    ),
    Layout(
        "salesforce-contact-report",
        "Contact Owner,Salutation,First Name,Last Name,Title,Account Name,Mailing Street,"
        "Mailing City,Mailing State/Province,Mailing Zip/Postal Code,Mailing Country,Phone,Mobile,"
        "Email,Lead Source,Birthdate,Created Date".split(","),
        [
            "Max Roth",
            "Mr.",
            "Jonas",
            "Weber",
            "Head of IT",
            "Weber Logistik GmbH",
            "Hauptstraße 5",
            "München",
            "Bayern",
            "80331",
            "Germany",
            "+49 89 1234567",
            "+49 151 23456789",
            "jonas.weber@weber-logistik.de",
            "Web",
            "12.04.1985",
            "05.03.2026",
        ],
        {
            "first_name": "Jonas",
            "last_name": "Weber",
            "email": "jonas.weber@weber-logistik.de",
            "phone": "+49891234567",
            "other_phones": ("+4915123456789",),
            "company": "Weber Logistik GmbH",
            "job_title": "Head of IT",
            "street": "Hauptstraße 5",
            "city": "München",
            "region": "Bayern",
            "postal_code": "80331",
            "country": "DE",
            "birth_date": datetime(1985, 4, 12).date(),
        },
        "2026-03-05T00:00:00+00:00",
    ),
    Layout(
        "salesforce-dataloader-lead",
        "ID,FIRSTNAME,LASTNAME,TITLE,COMPANY,EMAIL,PHONE,MOBILEPHONE,STREET,CITY,STATE,POSTALCODE,"
        "COUNTRY,LEADSOURCE,STATUS,CREATEDDATE".split(","),
        [
            "00Q5g00000AbCdEEAV",
            "Mehmet",
            "Yılmaz",
            "Genel Müdür",
            "Yılmaz Tekstil Ltd. Şti.",
            "mehmet@yilmaztekstil.com.tr",
            "0232 456 78 90",
            "0533 987 65 43",
            "Atatürk Cad. 12",
            "İzmir",
            "",
            "35220",
            "Türkiye",
            "Web",
            "Open - Not Contacted",
            "2026-03-05T10:15:00.000Z",
        ],
        {
            "first_name": "Mehmet",
            "last_name": "Yılmaz",
            "email": "mehmet@yilmaztekstil.com.tr",
            "phone": "+902324567890",
            "other_phones": ("+905339876543",),
            "company": "Yılmaz Tekstil Ltd. Şti.",
            "job_title": "Genel Müdür",
            "street": "Atatürk Cad. 12",
            "city": "İzmir",
            "postal_code": "35220",
            "country": "TR",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "salesforce-dataloader-contact",
        "ID,ACCOUNTID,ACCOUNT.NAME,FIRSTNAME,LASTNAME,TITLE,EMAIL,PHONE,MOBILEPHONE,MAILINGSTREET,"
        "MAILINGCITY,MAILINGSTATE,MAILINGPOSTALCODE,MAILINGCOUNTRY,BIRTHDATE,CREATEDDATE".split(
            ","
        ),
        [
            "0035g00000XyZaBAAV",
            "0015g00000QrStUAAV",
            "Acme Corp",
            "Olivia",
            "Brown",
            "CFO",
            "olivia.brown@acme.example.com",
            "+1 415 555 0132",
            "+1 415 555 0199",
            "1 Market St",
            "San Francisco",
            "CA",
            "94105",
            "United States",
            "1980-07-01",
            "2026-03-05T10:15:00.000+0000",
        ],
        {
            "first_name": "Olivia",
            "last_name": "Brown",
            "email": "olivia.brown@acme.example.com",
            "phone": "+14155550132",
            "other_phones": ("+14155550199",),
            "company": "Acme Corp",
            "job_title": "CFO",
            "street": "1 Market St",
            "city": "San Francisco",
            "region": "CA",
            "postal_code": "94105",
            "country": "US",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "hubspot-contacts",
        "Record ID,First Name,Last Name,Email,Phone Number,Mobile Phone Number,Company Name,"
        "Job Title,Street Address,City,State/Region,Postal Code,Country/Region,Create Date,"
        "Lifecycle Stage,Contact owner".split(","),
        [
            "51",
            "Zeynep",
            "Kaya",
            "zeynep.kaya@kayalojistik.com.tr",
            "+90 216 555 12 12",
            "+90 535 111 22 33",
            "Kaya Lojistik A.Ş.",
            "Operasyon Müdürü",
            "Bağdat Cad. 100",
            "İstanbul",
            "Kadıköy",
            "34710",
            "Turkey",
            "2026-03-05 10:15",
            "Lead",
            "Ayla Demir",
        ],
        {
            "first_name": "Zeynep",
            "last_name": "Kaya",
            "email": "zeynep.kaya@kayalojistik.com.tr",
            "phone": "+902165551212",
            "other_phones": ("+905351112233",),
            "company": "Kaya Lojistik A.Ş.",
            "job_title": "Operasyon Müdürü",
            "street": "Bağdat Cad. 100",
            "city": "İstanbul",
            "region": "Kadıköy",
            "postal_code": "34710",
            "country": "TR",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "zoho-leads",
        "Record Id,Lead Owner,Company,First Name,Last Name,Title,Email,Secondary Email,Phone,"
        "Mobile,Website,Lead Source,Lead Status,Street,City,State,Zip Code,Country,Created Time".split(
            ","
        ),
        [
            "zcrm_4876876000000512001",
            "Ayla Demir",
            "Müller Maschinenbau GmbH",
            "Anna",
            "Müller",
            "Einkaufsleiterin",
            "anna.mueller@mueller-maschinenbau.de",
            "anna.private@gmx.de",
            "+49 711 1234567",
            "+49 170 1234567",
            "mueller-maschinenbau.de",
            "Trade Show",
            "Contacted",
            "Industriestraße 3",
            "Stuttgart",
            "Baden-Württemberg",
            "70173",
            "Deutschland",
            "2026-03-05 10:15:00",
        ],
        {
            "first_name": "Anna",
            "last_name": "Müller",
            "email": "anna.mueller@mueller-maschinenbau.de",
            "other_emails": ("anna.private@gmx.de",),
            "phone": "+497111234567",
            "other_phones": ("+491701234567",),
            "company": "Müller Maschinenbau GmbH",
            "job_title": "Einkaufsleiterin",
            "street": "Industriestraße 3",
            "city": "Stuttgart",
            "region": "Baden-Württemberg",
            "postal_code": "70173",
            "country": "DE",
            "company_domain": "mueller-maschinenbau.de",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "zoho-contacts",
        "Record Id,Contact Owner,First Name,Last Name,Account Name,Email,Title,Phone,Mobile,"
        "Date of Birth,Mailing Street,Mailing City,Mailing State,Mailing Zip,Mailing Country,"
        "Created Time".split(","),
        [
            "zcrm_4876876000000613002",
            "Ayla Demir",
            "Can",
            "Öztürk",
            "Öztürk Gıda San. ve Tic. A.Ş.",
            "can.ozturk@ozturkgida.com.tr",
            "Satın Alma Uzmanı",
            "0312 444 55 66",
            "0542 333 44 55",
            "1990-06-30",
            "Kızılay Mah. 5",
            "Ankara",
            "Çankaya",
            "06420",
            "Türkiye",
            "2026-03-05 10:15:00",
        ],
        {
            "first_name": "Can",
            "last_name": "Öztürk",
            "email": "can.ozturk@ozturkgida.com.tr",
            "phone": "+903124445566",
            "other_phones": ("+905423334455",),
            "company": "Öztürk Gıda San. ve Tic. A.Ş.",
            "job_title": "Satın Alma Uzmanı",
            "street": "Kızılay Mah. 5",
            "city": "Ankara",
            "region": "Çankaya",
            "postal_code": "06420",
            "country": "TR",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "pipedrive-people",
        "Person - ID,Person - Name,Person - First name,Person - Last name,Person - Organization,"
        "Person - Email - Work,Person - Email - Home,Person - Phone - Work,Person - Phone - Mobile,"
        "Person - Job title,Person - Postal address,Person - Label,Person - Owner,"
        "Person - Person created".split(","),
        [
            "1042",
            "Lukas Schmidt",
            "Lukas",
            "Schmidt",
            "Schmidt & Partner KG",
            "lukas.schmidt@schmidt-partner.de",
            "lukas.s@web.de",
            "+49 40 7654321",
            "+49 160 7654321",
            "Geschäftsführer",
            "Jungfernstieg 7, 20354 Hamburg",
            "Hot lead",
            "Ayla Demir",
            "2026-03-05 10:15:00",
        ],
        {
            "first_name": "Lukas",
            "last_name": "Schmidt",
            "email": "lukas.schmidt@schmidt-partner.de",
            "other_emails": ("lukas.s@web.de",),
            "phone": "+49407654321",
            "other_phones": ("+491607654321",),
            "company": "Schmidt & Partner KG",
            "job_title": "Geschäftsführer",
            "street": "Jungfernstieg 7, 20354 Hamburg",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "dynamics-contacts",
        "(Do Not Modify) Contact,(Do Not Modify) Row Checksum,(Do Not Modify) Modified On,"
        "Full Name,First Name,Last Name,Email,Company Name,Job Title,Business Phone,Mobile Phone,"
        "Address 1: Street 1,Address 1: City,Address 1: State/Province,"
        "Address 1: ZIP/Postal Code,Address 1: Country/Region,Created On".split(","),
        [
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "xYz0aBc1",
            "05/03/2026 11:00",
            "Sophie Martin",
            "Sophie",
            "Martin",
            "sophie.martin@martin-conseil.fr",
            "Martin Conseil SARL",
            "Directrice",
            "+33 1 42 68 53 00",
            "+33 6 12 34 56 78",
            "12 Rue de Rivoli",
            "Paris",
            "Île-de-France",
            "75001",
            "France",
            "05/03/2026 10:15",
        ],
        {
            "first_name": "Sophie",
            "last_name": "Martin",
            "email": "sophie.martin@martin-conseil.fr",
            "phone": "+33142685300",
            "other_phones": ("+33612345678",),
            "company": "Martin Conseil SARL",
            "job_title": "Directrice",
            "street": "12 Rue de Rivoli",
            "city": "Paris",
            "region": "Île-de-France",
            "postal_code": "75001",
            "country": "FR",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "dynamics-leads",
        "(Do Not Modify) Lead,(Do Not Modify) Row Checksum,(Do Not Modify) Modified On,Name,"
        "Topic,Status Reason,Company Name,Email,Business Phone,Mobile Phone,Job Title,Street 1,"
        "City,State/Province,ZIP/Postal Code,Country/Region,Created On".split(","),
        [
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "aBc2dEf3",
            "05/03/2026 11:00",
            "Ahmet Çelik",
            "Forklift filosu",
            "New",
            "Çelik İnşaat A.Ş.",
            "ahmet.celik@celikinsaat.com.tr",
            "0224 555 66 77",
            "0555 666 77 88",
            "Proje Müdürü",
            "Nilüfer Cad. 9",
            "Bursa",
            "Nilüfer",
            "16110",
            "Türkiye",
            "05/03/2026 10:15",
        ],
        {
            "first_name": "Ahmet",
            "last_name": "Çelik",
            "email": "ahmet.celik@celikinsaat.com.tr",
            "phone": "+902245556677",
            "other_phones": ("+905556667788",),
            "company": "Çelik İnşaat A.Ş.",
            "job_title": "Proje Müdürü",
            "street": "Nilüfer Cad. 9",
            "city": "Bursa",
            "region": "Nilüfer",
            "postal_code": "16110",
            "country": "TR",
            "interest": "Forklift filosu",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "mailchimp-audience",
        "Email Address,First Name,Last Name,Address,Phone Number,Birthday,Company,MEMBER_RATING,"
        "OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,"
        "CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS".split(","),
        [
            "felix.braun@braun-design.de",
            "Felix",
            "Braun",
            "Unter den Linden 1  Berlin  BE  10117  DE",
            "+49 30 1234567",
            "04/12",
            "Braun Design",
            "2",
            "2026-03-05 10:15:00",
            "203.0.113.5",
            "2026-03-05 10:20:00",
            "203.0.113.5",
            "52.52",
            "13.40",
            "1",
            "2",
            "Europe/Berlin",
            "DE",
            "BE",
            "2026-03-05 10:20:00",
            "123456789",
            "a1b2c3d4e5",
            "",
            '"Fair 2026"',
        ],
        {
            "first_name": "Felix",
            "last_name": "Braun",
            "email": "felix.braun@braun-design.de",
            "phone": "+49301234567",
            "company": "Braun Design",
            "street": "Unter den Linden 1 Berlin BE 10117 DE",
            "region": "BE",
            "country": "DE",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "brevo-contacts",
        "CONTACT ID,EMAIL,FIRSTNAME,LASTNAME,SMS,LANDLINE_NUMBER,ADDED_TIME,MODIFIED_TIME,"
        "EMAIL_BLACKLISTED,SMS_BLACKLISTED".split(","),
        [
            "17",
            "selin.arslan@arslanmimarlik.com.tr",
            "Selin",
            "Arslan",
            "905321234567",
            "902163334455",
            "2026-03-05 10:15:00",
            "2026-03-06 09:00:00",
            "false",
            "false",
        ],
        {
            "first_name": "Selin",
            "last_name": "Arslan",
            "email": "selin.arslan@arslanmimarlik.com.tr",
            "phone": "+905321234567",
            "other_phones": ("+902163334455",),
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "eventbrite-attendees",
        "Order #,Order Date,First Name,Last Name,Email,Quantity,Ticket Type,Attendee #,Group,"
        "Order Type,Currency,Total Paid,Fees Paid,Eventbrite Fees,Eventbrite Payment Processing,"
        "Attendee Status,Home Address 1,Home Address 2,Home City,Home State,Home Zip,Home Country,"
        "Cell Phone,Job Title,Company,Work Phone".split(","),
        [
            "1234567890",
            "2026-03-05 10:15:00",
            "Emma",
            "Wilson",
            "emma.wilson@wilson-labs.co.uk",
            "1",
            "Early Bird",
            "9876543210",
            "",
            "Eventbrite Completed",
            "GBP",
            "49.00",
            "2.50",
            "1.20",
            "1.30",
            "Attending",
            "10 Downing Lane",
            "",
            "London",
            "",
            "SW1A 2AA",
            "GB",
            "+44 7911 123456",
            "Research Lead",
            "Wilson Labs Ltd",
            "+44 20 7946 0958",
        ],
        {
            "first_name": "Emma",
            "last_name": "Wilson",
            "email": "emma.wilson@wilson-labs.co.uk",
            "phone": "+447911123456",
            "other_phones": ("+442079460958",),
            "company": "Wilson Labs Ltd",
            "job_title": "Research Lead",
            "street": "10 Downing Lane",
            "city": "London",
            "postal_code": "SW1A 2AA",
            "country": "GB",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "typeform-responses",
        [
            "#",
            "What is your first name?",
            "And your last name?",
            "What is your email address?",
            "What's your phone number?",
            "Which company do you work for?",
            "What is your job title?",
            "Which country are you in?",
            "How did you hear about us?",
            "Start Date (UTC)",
            "Submit Date (UTC)",
            "Network ID",
        ],
        [
            "abc123xyz",
            "Burak",
            "Aydın",
            "burak@aydinenerji.com.tr",
            "+905301112233",
            "Aydın Enerji",
            "Satın Alma Müdürü",
            "Türkiye",
            "LinkedIn",
            "2026-03-05 10:10:00",
            "2026-03-05 10:15:00",
            "f1e2d3c4b5",
        ],
        {
            "first_name": "Burak",
            "last_name": "Aydın",
            "email": "burak@aydinenerji.com.tr",
            "phone": "+905301112233",
            "company": "Aydın Enerji",
            "job_title": "Satın Alma Müdürü",
            "country": "TR",
        },
        "2026-03-05T10:15:00+00:00",
        form=True,
        unmapped=("How did you hear about us?",),
    ),
    Layout(
        "jotform-submissions",
        [
            "Gönderim Tarihi",
            "Adınız Soyadınız",
            "E-posta Adresiniz",
            "Telefon Numaranız",
            "Şirketinizin Adı",
            "Göreviniz",
            "Hangi şehirdesiniz?",
            "Submission ID",
        ],
        [
            "05.03.2026 10:15",
            "Deniz Koç",
            "deniz.koc@kocotomotiv.com.tr",
            "(0532) 765 43 21",
            "Koç Otomotiv Ltd. Şti.",
            "Filo Yöneticisi",
            "Kocaeli",
            "5834716540123456789",
        ],
        {
            "first_name": "Deniz",
            "last_name": "Koç",
            "email": "deniz.koc@kocotomotiv.com.tr",
            "phone": "+905327654321",
            "company": "Koç Otomotiv Ltd. Şti.",
            "job_title": "Filo Yöneticisi",
            "city": "Kocaeli",
        },
        "2026-03-05T10:15:00+00:00",
        form=True,
    ),
    Layout(
        "google-forms-responses",
        [
            "Zeitstempel",
            "E-Mail-Adresse",
            "Wie lautet Ihr Vorname?",
            "Wie lautet Ihr Nachname?",
            "Ihre Telefonnummer",
            "Für welches Unternehmen arbeiten Sie?",
            "Ihre Position im Unternehmen",
            "In welchem Land arbeiten Sie?",
        ],
        [
            "05.03.2026 10:15:00",
            "hannah.fischer@fischer-bau.at",
            "Hannah",
            "Fischer",
            "+43 1 2345678",
            "Fischer Bau GmbH",
            "Projektleiterin",
            "Österreich",
        ],
        {
            "first_name": "Hannah",
            "last_name": "Fischer",
            "email": "hannah.fischer@fischer-bau.at",
            "phone": "+4312345678",
            "company": "Fischer Bau GmbH",
            "job_title": "Projektleiterin",
            "country": "AT",
        },
        "2026-03-05T10:15:00+00:00",
        form=True,
    ),
    Layout(
        "google-forms-responses",
        [
            "Timestamp",
            "Email Address",
            "What is your full name?",
            "Your phone number",
            "Company name",
            "What is your role?",
        ],
        [
            "05/03/2026 10:15:00",
            "liam.oconnor@oconnor-builders.ie",
            "Liam O'Connor",
            "+353 1 234 5678",
            "O'Connor Builders",
            "Site Manager",
        ],
        {
            "first_name": "Liam",
            "last_name": "O'Connor",
            "email": "liam.oconnor@oconnor-builders.ie",
            "phone": "+35312345678",
            "company": "O'Connor Builders",
            "job_title": "Site Manager",
        },
        "2026-03-05T10:15:00+00:00",
        form=True,
    ),
    Layout(
        "linkedin-connections",
        "First Name,Last Name,URL,Email Address,Company,Position,Connected On".split(","),
        [
            "Ece",
            "Yıldız",
            "https://www.linkedin.com/in/ece-yildiz-123",
            "ece.yildiz@yildizyazilim.com",
            "Yıldız Yazılım",
            "CTO",
            "05 Mar 2026",
        ],
        {
            "first_name": "Ece",
            "last_name": "Yıldız",
            "email": "ece.yildiz@yildizyazilim.com",
            "company": "Yıldız Yazılım",
            "job_title": "CTO",
            # the profile link is not the company's website
            "company_domain": "yildizyazilim.com",
        },
        "2026-03-05T00:00:00+00:00",
        preamble=(
            "Notes:\n"
            '"When exporting your connection data, you may notice that some of the email '
            "addresses are missing. You will only see email addresses for connections who have "
            "allowed their connections to see or download their email address using this setting "
            "https://www.linkedin.com/psettings/privacy/email. You can learn more here "
            'https://www.linkedin.com/help/linkedin/answer/261"\n'
            "\n"
        ),
    ),
    Layout(
        "google-contacts",
        GOOGLE_CONTACTS,
        cells(
            GOOGLE_CONTACTS,
            {
                "First Name": "Murat",
                "Last Name": "Doğan",
                "File As": "Murat Doğan",
                "Organization Name": "Doğan Hukuk Bürosu",
                "Organization Title": "Avukat",
                "Birthday": "1979-01-02",
                "Notes": "met at the fair",
                "Labels": "* myContacts ::: Fair 2026",
                "E-mail 1 - Label": "Work",
                "E-mail 1 - Value": "murat.dogan@doganhukuk.com.tr",
                "E-mail 2 - Label": "Home",
                "E-mail 2 - Value": "muratdogan@gmail.com",
                "Phone 1 - Label": "Mobile",
                "Phone 1 - Value": "+90 505 123 45 67",
                "Phone 2 - Label": "Work",
                "Phone 2 - Value": "+90 232 444 12 34",
                "Address 1 - Label": "Work",
                "Address 1 - Formatted": "Alsancak Mah. 1482 Sk. 3\nKonak\n35220 İzmir\nTürkiye",
                "Address 1 - Street": "Alsancak Mah. 1482 Sk. 3",
                "Address 1 - City": "İzmir",
                "Address 1 - Region": "Konak",
                "Address 1 - Postal Code": "35220",
                "Address 1 - Country": "Türkiye",
            },
        ),
        {
            "first_name": "Murat",
            "last_name": "Doğan",
            "email": "murat.dogan@doganhukuk.com.tr",
            "other_emails": ("muratdogan@gmail.com",),
            "phone": "+905051234567",
            "other_phones": ("+902324441234",),
            "company": "Doğan Hukuk Bürosu",
            "job_title": "Avukat",
            "street": "Alsancak Mah. 1482 Sk. 3",
            "city": "İzmir",
            "region": "Konak",
            "postal_code": "35220",
            "country": "TR",
            "message": "met at the fair",
        },
        None,
    ),
    Layout(
        "google-contacts-legacy",
        GOOGLE_CONTACTS_LEGACY,
        cells(
            GOOGLE_CONTACTS_LEGACY,
            {
                "Name": "Clara Hoffmann",
                "Given Name": "Clara",
                "Family Name": "Hoffmann",
                "Birthday": "1988-09-15",
                "Group Membership": "* myContacts",
                "E-mail 1 - Type": "* Work",
                "E-mail 1 - Value": "clara.hoffmann@hoffmann-it.ch",
                "Phone 1 - Type": "Work",
                "Phone 1 - Value": "+41 44 123 45 67",
                "Phone 2 - Type": "Mobile",
                "Phone 2 - Value": "+41 79 123 45 67",
                "Address 1 - Type": "Work",
                # the whole address in one cell, beside its parts
                "Address 1 - Formatted": "Bahnhofstrasse 10\n8001 Zürich ZH\nSwitzerland",
                "Address 1 - Street": "Bahnhofstrasse 10",
                "Address 1 - City": "Zürich",
                "Address 1 - Region": "ZH",
                "Address 1 - Postal Code": "8001",
                "Address 1 - Country": "Switzerland",
                "Organization 1 - Type": "",
                "Organization 1 - Name": "Hoffmann IT AG",
                "Organization 1 - Title": "Leiterin Vertrieb",
            },
        ),
        {
            "first_name": "Clara",
            "last_name": "Hoffmann",
            "email": "clara.hoffmann@hoffmann-it.ch",
            "phone": "+41441234567",
            "other_phones": ("+41791234567",),
            "company": "Hoffmann IT AG",
            "job_title": "Leiterin Vertrieb",
            "street": "Bahnhofstrasse 10",
            "city": "Zürich",
            "region": "ZH",
            "postal_code": "8001",
            "country": "CH",
        },
        None,
    ),
    Layout(
        "outlook-contacts",
        OUTLOOK_CONTACTS,
        cells(
            OUTLOOK_CONTACTS,
            {
                "Title": "Dr.",
                "First Name": "Peter",
                "Last Name": "Wagner",
                "Company": "Wagner Medizintechnik GmbH",
                "Department": "Vertrieb",
                "Job Title": "Vertriebsleiter",
                "Business Street": "Königsallee 20",
                "Business City": "Düsseldorf",
                "Business State": "NRW",
                "Business Postal Code": "40212",
                "Business Country/Region": "Germany",
                "Business Phone": "+49 211 1234567",
                "Mobile Phone": "+49 172 1234567",
                "Birthday": "0/0/00",
                "E-mail Address": "peter.wagner@wagner-medtech.de",
                "E-mail Type": "SMTP",
                "E-mail Display Name": "Peter Wagner (peter.wagner@wagner-medtech.de)",
                "E-mail 2 Address": "p.wagner@t-online.de",
                "E-mail 2 Type": "SMTP",
                "E-mail 2 Display Name": "p.wagner@t-online.de",
                "Gender": "Unspecified",
                "Initials": "P.W.",
                "Priority": "Normal",
                "Private": "False",
                "Sensitivity": "Normal",
                "Web Page": "wagner-medtech.de",
            },
        ),
        {
            "first_name": "Peter",
            "last_name": "Wagner",
            "email": "peter.wagner@wagner-medtech.de",
            "other_emails": ("p.wagner@t-online.de",),
            "phone": "+492111234567",
            "other_phones": ("+491721234567",),
            "company": "Wagner Medizintechnik GmbH",
            # "Title" is Outlook's salutation, not the job
            "job_title": "Vertriebsleiter",
            "street": "Königsallee 20",
            "city": "Düsseldorf",
            "region": "NRW",
            "postal_code": "40212",
            "country": "DE",
            "birth_date": None,
            "issues": (),
        },
        None,
    ),
    Layout(
        "apple-contacts-export",
        "First Name,Last Name,Organization,Job Title,Email (work),Email (home),Phone (mobile),"
        "Phone (work),Address (work) Street,Address (work) City,Address (work) ZIP,"
        "Address (work) Country,Creation Date".split(","),
        [
            "Leyla",
            "Aksoy",
            "Aksoy Tasarım",
            "Kurucu",
            "leyla@aksoytasarim.com",
            "leyla.aksoy@icloud.com",
            "+90 544 987 65 43",
            "+90 212 987 65 43",
            "Nişantaşı Abdi İpekçi Cad. 7",
            "İstanbul",
            "34367",
            "Türkiye",
            "2026-03-05 10:15:00",
        ],
        {
            "first_name": "Leyla",
            "last_name": "Aksoy",
            "email": "leyla@aksoytasarim.com",
            "other_emails": ("leyla.aksoy@icloud.com",),
            "phone": "+905449876543",
            "other_phones": ("+902129876543",),
            "company": "Aksoy Tasarım",
            "job_title": "Kurucu",
            "street": "Nişantaşı Abdi İpekçi Cad. 7",
            "city": "İstanbul",
            "postal_code": "34367",
            "country": "TR",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "badge-scanner",
        "Badge ID,Scan Date,First Name,Last Name,Company,Job Title,Email,Country Code,Phone,"
        "Mobile,City,Country,Notes,Rating".split(","),
        [
            "B-000417",
            "2026-03-05 10:15:00",
            "Oliver",
            "Smith",
            "Smith Engineering Ltd",
            "Plant Manager",
            "oliver.smith@smith-eng.co.uk",
            "+44",
            "20 7946 0958",
            "07911 123456",
            "London",
            "United Kingdom",
            "wants a demo in April",
            "A",
        ],
        {
            "first_name": "Oliver",
            "last_name": "Smith",
            "email": "oliver.smith@smith-eng.co.uk",
            "phone": "+442079460958",
            "other_phones": ("+447911123456",),
            "company": "Smith Engineering Ltd",
            "job_title": "Plant Manager",
            "city": "London",
            "country": "GB",
            "message": "wants a demo in April",
        },
        "2026-03-05T10:15:00+00:00",
    ),
    Layout(
        "badge-scanner-tr",
        "Kart No,Tarama Tarihi,Ad,Soyad,Firma,Unvan,E-posta,Ülke Kodu,Telefon,Ülke,Şehir".split(
            ","
        ),
        [
            "TR-2291",
            "05.03.2026 10:15",
            "Gökhan",
            "Öztürk",
            "Öztürk Metal San. A.Ş.",
            "Üretim Müdürü",
            "gokhan@ozturkmetal.com.tr",
            "90",
            "532 246 80 12",
            "Türkiye",
            "Konya",
        ],
        {
            "first_name": "Gökhan",
            "last_name": "Öztürk",
            "email": "gokhan@ozturkmetal.com.tr",
            "phone": "+905322468012",
            "company": "Öztürk Metal San. A.Ş.",
            "job_title": "Üretim Müdürü",
            "city": "Konya",
            "country": "TR",
        },
        "2026-03-05T10:15:00+00:00",
        delimiter=";",
    ),
    Layout(
        "badge-scanner-de",
        "Besucher-ID,Erfasst am,Anrede,Titel,Vorname,Nachname,Firma,Position,E-Mail,"
        "Ländervorwahl,Telefon,Mobil,Straße,PLZ,Ort,Land".split(","),
        [
            "DE-7781",
            "05.03.2026 10:15",
            "Frau",
            "Dr.",
            "Katrin",
            "Becker",
            "Becker Automation GmbH",
            "Technische Leiterin",
            "k.becker@becker-automation.de",
            "+49",
            "089 2345678",
            "0151 98765432",
            "Leopoldstraße 8",
            "80802",
            "München",
            "Deutschland",
        ],
        {
            "first_name": "Katrin",
            "last_name": "Becker",
            "email": "k.becker@becker-automation.de",
            "phone": "+49892345678",
            "other_phones": ("+4915198765432",),
            "company": "Becker Automation GmbH",
            # "Titel" is the academic title here, "Position" the job
            "job_title": "Technische Leiterin",
            "street": "Leopoldstraße 8",
            "city": "München",
            "postal_code": "80802",
            "country": "DE",
        },
        "2026-03-05T10:15:00+00:00",
        delimiter=";",
    ),
]
IDS = [f"{i:02d}-{lay.name}" for i, lay in enumerate(LAYOUTS)]


def write_export(path: Path, lay: Layout) -> Path:
    buf = io.StringIO()
    buf.write(lay.preamble)
    w = csv.writer(buf, delimiter=lay.delimiter, lineterminator="\r\n")
    w.writerow(lay.header)
    w.writerow(lay.row)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def land(tmp_path: Path, lay: Layout) -> tuple[RawRow, Contact]:
    """The export read as a sheet source reads it (its header scorer and row dating)."""
    path = write_export(tmp_path / f"{lay.name}.csv", lay)
    source = SpreadsheetSource.model_validate(
        {"name": "exports", "kind": "spreadsheet", "path": str(path)}
    )
    batches = list(
        iter_spreadsheet(
            "exports",
            str(path),
            None,
            score=header_scorer(source.columns),
            dating=row_dating(source),
            now=FIRST_LANDED,
        )
    )
    assert [j for b in batches for j in b.rejects] == []
    [rec] = [r for b in batches for r in b.records]
    row = RawRow(
        raw_id_for(rec.source, rec.source_record_id),
        rec.source,
        rec.source_kind,
        rec.source_record_id,
        rec.received_at,
        rec.payload,
    )
    contact = normalize_contact(row, OPTS)
    assert isinstance(contact, Contact), contact
    return row, contact


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[RawRow, Contact]]:
    base = tmp_path_factory.mktemp("layouts")
    out = []
    for i, lay in enumerate(LAYOUTS):
        d = base / str(i)
        d.mkdir()
        out.append(land(d, lay))
    return out


@pytest.mark.parametrize("i", range(len(LAYOUTS)), ids=IDS)
def test_an_export_lands_every_carried_field(i: int, landed: list[tuple[RawRow, Contact]]) -> None:
    lay = LAYOUTS[i]
    row, contact = landed[i]
    assert detect_layout(tuple(lay.header)) in ((None, lay.name) if lay.form else (lay.name,))
    got = {k: getattr(contact, k) for k in lay.expect}
    assert got == lay.expect
    # every address the row holds, in whatever column, is the contact's email or one beside it
    addresses = {m.casefold() for cell in lay.row for m in EMAIL_IN_TEXT.findall(cell)}
    assert addresses == {contact.email, *(contact.other_emails or ())} - {None}
    for k in ("email", "phone", "company", "first_name", "last_name", "country"):
        if k not in lay.expect:
            assert getattr(contact, k) is None, k


@pytest.mark.parametrize("i", range(len(LAYOUTS)), ids=IDS)
def test_an_export_is_dated_by_its_own_date_column(
    i: int, landed: list[tuple[RawRow, Contact]]
) -> None:
    lay = LAYOUTS[i]
    row, _contact = landed[i]
    if lay.dated is None:
        assert "received_at" not in map_fields(row.payload)
        assert row.received_at == FIRST_LANDED  # no date of its own: when it was first landed
        return
    assert row.received_at == datetime.fromisoformat(lay.dated).astimezone(UTC)


def test_every_carried_name_email_phone_and_company_reaches_the_contact(
    landed: list[tuple[RawRow, Contact]],
) -> None:
    carried = reached = 0
    missed: list[str] = []
    for lay, (_row, contact) in zip(LAYOUTS, landed, strict=True):
        for key in (*NAME_FIELDS, "email", "phone", "company", "other_emails", "other_phones"):
            want = lay.expect.get(key)
            if not want:
                continue
            n = len(want) if isinstance(want, tuple) else 1
            carried += n
            if getattr(contact, key) == want:
                reached += n
            else:
                missed.append(f"{lay.name}.{key}")
    share = reached / carried
    print(f"carried name/email/phone/company values reaching the contact: {reached}/{carried}")
    assert carried > 100 and share == 1.0, missed


@pytest.mark.parametrize("i", range(len(LAYOUTS)), ids=IDS)
def test_the_column_check_is_quiet_on_a_layouts_documented_columns(i: int) -> None:
    """Columns a layout documents as carrying nothing a contact holds (a salutation, an IP
    address, a display name, a fax) raise no unmapped-column warning, whatever they hold."""
    lay = LAYOUTS[i]
    shape = TableShape("exports", lay.name, tuple(lay.header), True, (tuple(lay.row),), 1, 1, 1)
    assert [w.message for w in check_table(shape)] == []


def test_the_column_check_reads_a_header_as_its_layout_means_it() -> None:
    """The column check maps each header as the row's layout does, exactly as normalize reads it."""
    by_name = {lay.name: lay for lay in LAYOUTS}

    def mapped(name: str) -> dict[str, str | None]:
        lay = by_name[name]
        return {c.header: c.field for c in map_columns(lay.header, [lay.row])}

    assert mapped("outlook-contacts")["Title"] is None  # a salutation
    assert mapped("badge-scanner-de")["Titel"] is None  # an academic title
    assert mapped("linkedin-connections")["URL"] is None  # the profile, not a website
    assert mapped("mailchimp-audience")["CC"] == "country"
    assert mapped("brevo-contacts")["SMS"] == "phone"
    assert mapped("badge-scanner")["Country Code"] == "phone_country_code"
    # in every layout, the first filled column the check maps to a field is the value landed
    # (a fallback column only when no other column gives its field)
    for lay in LAYOUTS:
        landed = map_fields(dict(zip(lay.header, lay.row, strict=True)))
        columns = list(zip(map_columns(lay.header, [lay.row]), lay.row, strict=True))
        first: dict[str, str] = {}
        for column, value in sorted(columns, key=lambda cv: cv[0].by == "fallback"):
            if column.field and value.strip():
                first.setdefault(column.field, value)
        assert first == {k: v for k, v in landed.items() if k in first}, lay.name
        assert set(first) == set(landed) - {"other_emails", "other_phones"}, lay.name


@pytest.mark.parametrize("header", [GOOGLE_CONTACTS, GOOGLE_CONTACTS_LEGACY])
def test_a_formatted_address_is_the_street_only_when_no_part_is_given(header: list[str]) -> None:
    whole = "Bahnhofstrasse 10\n8001 Zürich\nSwitzerland"
    parts = {"Address 1 - Formatted": whole, "Address 1 - Street": "Bahnhofstrasse 10"}
    row = dict(zip(header, cells(header, parts), strict=True))
    assert map_fields(row)["street"] == "Bahnhofstrasse 10"
    # an address kept as one text only: the formatted cell is all there is
    row = dict(zip(header, cells(header, {"Address 1 - Formatted": whole}), strict=True))
    assert map_fields(row)["street"] == whole
    by = {c.header: (c.field, c.by) for c in map_columns(header, [list(row.values())])}
    assert by["Address 1 - Formatted"] == ("street", "fallback")


def test_the_alias_table_keeps_every_alias_the_code_had() -> None:
    # every header → field lookup of the aliases that lived in fields.py before the table
    before = json.loads((FIXTURES / "aliases_before_table.json").read_text(encoding="utf-8"))
    assert len(before["aliases"]) == 416
    assert [(a, canonical_field(a)) for a, _ in before["aliases"]] == [
        (a, f) for a, f in before["aliases"]
    ]
    assert {k: canonical_field(k) for k in before["lookup"]} == before["lookup"]


def test_the_alias_table_is_well_formed() -> None:
    assert {a.field for a in ALIASES} <= set(CANONICAL) | {IGNORE}
    assert {a.language for a in ALIASES} == {"en", "tr", "de", "fr", "es"}
    documented = set(layouts())
    assert {lay.name for lay in LAYOUTS} <= documented
    # a layout's own headers are all known (the unmapped-column warning stays quiet on them)
    for lay in LAYOUTS:
        assert [h for h in lay.header if not known_header(h)] == list(lay.unmapped), lay.name
    # no header is listed twice with different fields inside one layout
    seen: dict[tuple[str, str], str] = {}
    for a in ALIASES:
        if a.match == "exact":
            assert seen.setdefault((a.layout, header_key(a.header)), a.field) == a.field, a


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("What is your email address?", "email"),
        ("Your work email", "email"),
        ("What's your phone number?", "phone"),
        ("What is your company's name?", "company"),
        ("What's your company website?", "website"),
        ("E-posta adresiniz nedir?", "email"),
        ("Adınız Soyadınız", "full_name"),
        ("Soyadınız", "last_name"),
        ("Şirketinizin adı nedir?", "company"),
        ("Telefon numaranız", "phone"),
        ("Wie lautet Ihre E-Mail-Adresse?", "email"),
        ("Bitte geben Sie Ihre Telefonnummer an", "phone"),
        ("In welchem Land arbeiten Sie?", "country"),
        ("How did you hear about us?", None),
        ("Any other comments?", "message"),
    ],
)
def test_question_style_headers_are_read_by_the_words_they_ask_with(
    header: str, field: str | None
) -> None:
    assert canonical_field(header) == field


def test_a_header_means_what_its_layout_says() -> None:
    outlook = ("Title", "First Name", "Last Name", "Company", "Job Title", "E-mail Address")
    assert map_fields(
        dict(zip(outlook, ["Dr.", "A", "B", "C", "CTO", "a@b.example"], strict=True))
    ) == {
        "first_name": "A",
        "last_name": "B",
        "company": "C",
        "job_title": "CTO",
        "email": "a@b.example",
    }
    # the same "Title" in a Salesforce report is the job title
    sf = ("First Name", "Last Name", "Title", "Account Name", "Email", "Mailing City")
    assert (
        map_fields(dict(zip(sf, ["A", "B", "CTO", "C", "a@b.example", "X"], strict=True)))[
            "job_title"
        ]
        == "CTO"
    )
    # an explicit column map still wins over any layout
    assert map_fields({"Title": "Dr.", "Email": "a@b.example"}, {"Title": "job_title"}) == {
        "job_title": "Dr.",
        "email": "a@b.example",
    }
