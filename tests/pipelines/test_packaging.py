"""The wheel installs one import namespace, ``privfreq``, and nothing beside it."""
import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_wheel_holds_only_the_privfreq_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("privfreq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} \
        == {"privfreq"}
    for sub in ("protocols", "transforms", "schemas", "pipelines"):
        assert f"privfreq/{sub}/__init__.py" in names
    assert "privfreq/schemas/report.avsc" in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert "privfreq = privfreq.pipelines.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
