"""`manage.py import_laptop_reports FILE.csv`: an export of Inventario's connection events."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from schools.models import Laptop, LaptopDay, LaptopVersionChange

V1, V2 = "1" * 64, "2" * 64
HEADER = "serial_number,connected_at,ip_address,vhash,free_space,stolen\n"


def run(path):
    out, err = StringIO(), StringIO()
    try:
        call_command("import_laptop_reports", str(path), stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def export(tmp_path, db):
    def _export(text):
        path = tmp_path / "connection_events.csv"
        path.write_text(text, encoding="utf-8")
        return path

    return _export


def test_it_imports_an_export(export):
    path = export(
        HEADER
        + f"SHC20000001,2013-01-28 21:52:31,10.0.0.1,{V1},1024,0\n"
        + f"SHC20000001,2013-01-29T21:52:31.822307,10.0.0.1,{V2},2048,1\n"
        + "SHC20000002,2013-01-28 10:00:00,NULL,\\N,,f\n"
    )

    code, out, _err = run(path)

    assert code == 0
    assert "3 reports stored, 0 repeats" in out
    first = Laptop.objects.get(serial="SHC20000001")
    assert (first.vhash, first.free_space_kib, first.stolen) == (V2, 2048, True)
    second = Laptop.objects.get(serial="SHC20000002")
    assert (second.vhash, second.address, second.free_space_kib) == ("", None, None)
    assert LaptopVersionChange.objects.count() == 1


def test_bad_lines_are_reported_by_number_and_the_good_ones_imported(export):
    path = export(
        HEADER
        + f"SHC20000001,2013-01-28 21:52:31,10.0.0.1,{V1},1024,0\n"
        + f"SHC 2,2013-01-28 21:52:31,10.0.0.1,{V1},1024,0\n"
        + f"SHC20000003,soon,10.0.0.1,{V1},1024,0\n"
        + "SHC20000004,2013-01-28 21:52:31,10.0.0.1,XYZ,1024,0\n"
        + "SHC20000005,2013-01-28 21:52:31\n"
        + f"SHC20000006,2013-01-28 21:52:31,10.0.0.1,{V1},1024,0\n"
    )

    code, out, err = run(path)

    assert code == 2
    assert "2 reports stored" in out and "4 lines refused" in out
    assert f"{path}:3: serial_number must be the laptop's serial number" in err
    assert f"{path}:4: connected_at 'soon' is not an ISO 8601 time" in err
    assert f"{path}:5: vhash must be 64 lowercase hexadecimal digits" in err
    assert f"{path}:6: 2 cells where the header has 6" in err
    assert sorted(Laptop.objects.values_list("serial", flat=True)) == [
        "SHC20000001",
        "SHC20000006",
    ]


def test_importing_the_same_file_twice_changes_nothing(export):
    path = export(
        HEADER
        + f"SHC20000001,2013-01-28 21:52:31,10.0.0.1,{V1},1024,0\n"
        + f"SHC20000001,2013-01-29 21:52:31,10.0.0.1,{V2},1024,0\n"
    )
    run(path)
    before = (
        list(Laptop.objects.values()),
        list(LaptopVersionChange.objects.values()),
        list(LaptopDay.objects.values()),
    )

    code, out, _err = run(path)

    assert code == 0
    assert "0 reports stored, 2 repeats" in out
    after = (
        list(Laptop.objects.values()),
        list(LaptopVersionChange.objects.values()),
        list(LaptopDay.objects.values()),
    )
    assert after == before


def test_a_file_without_the_columns_is_refused_whole(export):
    code, _out, err = run(export("serial,when\nSHC1,2013-01-28\n"))

    assert code == 1
    assert "the header lacks serial_number, connected_at" in err
    assert not Laptop.objects.exists()
