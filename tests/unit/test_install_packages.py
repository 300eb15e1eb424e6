"""`task setup` installs through uv with the settings pip would use (.ci/install_packages.py): read from a real
`pip config list` over a pip.conf and PIP_* variables of the test's own."""

from __future__ import annotations

import importlib.util
import itertools
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def installer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_packages", ROOT / ".ci/install_packages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pip_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's pip.conf, read last (over the machine's), and no PIP_* variable but the test's."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\n"
                    "extra-index-url = file:///opt/a/simple file:///opt/b/simple\n"
                    "find-links = /from/file\nconstraint = /etc/constraints.txt\ncert = /etc/ca.pem\n"
                    "timeout = 60\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    return conf


def test_the_settings_that_choose_packages_are_passed_to_uv_and_the_environment_wins(
        pip_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "/wheels/one /wheels/two")
    command, env = installer().uv_command(Path("/venv/bin/uv"), ["-e", ".[ml,dev]"])
    assert command[:3] == ["/venv/bin/uv", "pip", "install"]
    assert command[-2:] == ["-e", ".[ml,dev]"]
    pairs = list(itertools.pairwise(command))
    assert ("--index-strategy", "unsafe-best-match") in pairs  # every index searched, as pip does
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert [v for o, v in pairs if o == "--extra-index-url"] == ["file:///opt/a/simple", "file:///opt/b/simple"]
    assert [v for o, v in pairs if o == "--find-links"] == ["/wheels/one", "/wheels/two"]  # PIP_FIND_LINKS
    assert [v for o, v in pairs if o == "--constraint"] == ["/etc/constraints.txt"]
    assert env["SSL_CERT_FILE"] == "/etc/ca.pem"
    assert "60" not in command  # settings that do not choose packages stay pip's


def test_without_any_pip_settings_uv_uses_its_defaults(pip_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no file, not even the machine's
    command, env = installer().uv_command(Path("uv"), ["ferry"])
    assert "SSL_CERT_FILE" not in env or env["SSL_CERT_FILE"] == os.environ.get("SSL_CERT_FILE")
    assert not {"--index-url", "--extra-index-url", "--find-links", "--constraint"} & set(command)
    assert command[-1] == "ferry"
