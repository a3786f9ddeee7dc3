"""The attachment rules both ends apply (issue 16): filenames, SES's refused types, content types
and ids, invites, and the exact size of an attachment's part."""

from __future__ import annotations

import binascii

import pytest
from mailroom_contracts.message import (
    DANGEROUS_EXTENSIONS,
    attachment_head,
    attachment_part_size,
    base64_body_size,
    content_id_problem,
    content_type_problem,
    filename_problem,
    guess_content_type,
    ical_problem,
)


@pytest.mark.parametrize(
    "name",
    ["invoice.pdf", "Rechnung März €.pdf", "a", ".bashrc", "a b (1).tar.gz", "x" * 255, 'quote".txt', "=?utf-8?b?x?="],
)
def test_good_filenames(name: str) -> None:
    assert filename_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "..",
        "a/b",
        "a\\b",
        "a\rb",
        "a\nb",
        "a\x00b",
        "a\x1fb",
        "a\x7fb",
        "a\u2028b",
        " a.pdf",
        "a.pdf ",
        "x" * 256,
    ],
)
def test_bad_filenames(name: str) -> None:
    assert filename_problem(name) is not None


def test_every_type_ses_refuses_is_refused_whatever_its_case_or_trailing_dots() -> None:
    assert {"exe", "bat", "js", "vbs", "ps1", "msi", "scr", "lnk"} <= DANGEROUS_EXTENSIONS
    assert len(DANGEROUS_EXTENSIONS) == 90  # the SES developer guide's list
    for ext in DANGEROUS_EXTENSIONS:
        for name in (f"a.{ext}", f"a.{ext.upper()}", f"a.pdf.{ext}", f"a.{ext}.", f"a.{ext}. ."):
            assert filename_problem(name.rstrip() if name.endswith(" ") else name) is not None, name
    assert filename_problem("a.exe.pdf") is None  # only the last extension counts
    assert filename_problem("exe") is None  # no extension at all


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.pdf", "application/pdf"),
        ("A.PDF", "application/pdf"),
        ("logo.png", "image/png"),
        ("photo.jpeg", "image/jpeg"),
        ("data.csv", "text/csv"),
        ("archive.tar.gz", "application/gzip"),
        ("notes", "application/octet-stream"),
        ("x.unknownext", "application/octet-stream"),
        ("invite.ics", "text/calendar"),
        ("report.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("sheet.XLSX", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ],
)
def test_content_types_are_guessed_from_the_builtin_table(name: str, expected: str) -> None:
    assert guess_content_type(name) == expected


def test_content_types_and_ids() -> None:
    assert content_type_problem("application/vnd.openxmlformats-officedocument.wordprocessingml.document") is None
    for bad in ("pdf", "text/plain; charset=utf-8", "multipart/mixed", "message/rfc822", "a/b\r\nX: y", "/x"):
        assert content_type_problem(bad) is not None, bad
    assert content_id_problem("logo@acme.test") is None
    for bad in ("", "<logo>", "a b", 'a"b', "x" * 79, "é"):
        assert content_id_problem(bad) is not None, bad


def test_invites() -> None:
    assert ical_problem("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n") is None
    assert ical_problem("\r\nbegin:vcalendar\r\n") is None
    assert ical_problem("BEGIN:VEVENT") is not None
    assert ical_problem("BEGIN:VCALENDAR\x00") is not None


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 114, 1000, 65536])
def test_base64_size_is_the_encoded_length_in_76_column_lines(size: int) -> None:
    data = bytes(size)
    encoded = binascii.b2a_base64(data, newline=False).decode()
    lines = "".join(encoded[i : i + 76] + "\r\n" for i in range(0, len(encoded), 76))
    assert base64_body_size(size) == len(lines)
    head = attachment_head("Zoë.pdf", "application/pdf", "x")
    assert attachment_part_size("Zoë.pdf", "application/pdf", "x", size) == len(head) + len(lines)
    assert all(len(line) <= 78 for line in head.split("\r\n"))
