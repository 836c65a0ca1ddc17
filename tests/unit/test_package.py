"""What a receiver gets from `import consumer`: the verify functions, typed, and nothing heavy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import consumer

REPO = Path(__file__).resolve().parents[2]

HEAVY = ("aiokafka", "aiohttp", "pydantic", "yaml", "structlog")


def run_python(code: str, cwd: Path) -> str:
    """A fresh interpreter: this one has imported everything already."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_verifying_imports_nothing_heavy(tmp_path: Path) -> None:
    out = run_python(
        """
        import json, sys
        import consumer
        consumer.verify, consumer.sign, consumer.verify_standard
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
        """,
        tmp_path,
    )
    loaded = set(json.loads(out))
    assert "consumer" in loaded
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)


def test_the_service_names_load_on_first_use(tmp_path: Path) -> None:
    out = run_python(
        """
        import sys
        from consumer import run_service
        import consumer
        assert run_service is sys.modules["consumer.service"].run_service
        print(all(getattr(consumer, name) is not None for name in consumer.__all__))
        print("aiokafka" in sys.modules)
        """,
        tmp_path,
    )
    assert out.split() == ["True", "True"]


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    assert not hasattr(consumer, "no_such_name")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install` would build, from a clean copy of what the build reads."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "consumer", source / "consumer", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("dist")
    run_python(
        f"""
        import setuptools.build_meta
        setuptools.build_meta.build_wheel({str(out)!r})
        """,
        source,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_ships_the_type_marker_and_the_license(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "consumer/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not [name for name in names if name.startswith("tests/")]


def test_receivers_type_checking_against_the_installed_package_get_its_types(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mypy refuses an installed package without py.typed ("missing library stubs or py.typed
    marker"); with it, a receiver's mistake is caught."""
    from mypy import api

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "env"], check=True)
    (site,) = (tmp_path / "env").glob("lib/python*/site-packages")
    zipfile.ZipFile(wheel).extractall(site)
    monkeypatch.chdir(tmp_path)  # mypy looks in the working directory first
    (tmp_path / "receiver.py").write_text(
        textwrap.dedent(
            """
            from consumer import verify

            ok: bool = verify(b"{}", "00", "secret")
            wrong: str = verify(b"{}", "00", "secret")
            """
        ),
        encoding="utf-8",
    )
    out, _, status = api.run(
        [
            "--strict",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--python-executable",
            str(tmp_path / "env" / "bin" / "python"),
            "receiver.py",
        ]
    )
    assert status == 1, out
    # Exactly the one planted error: the types came through, and nothing was refused.
    assert out.splitlines()[:-1] == [
        "receiver.py:5: error: Incompatible types in assignment "
        '(expression has type "bool", variable has type "str")  [assignment]'
    ]
