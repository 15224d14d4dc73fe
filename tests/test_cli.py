"""The ``ppl`` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ppl import cli


def test_quickstart_writes_the_table_and_the_plot(tmp_path, capsys):
    assert (
        cli.main(["quickstart", "--out", str(tmp_path), "--steps", "20", "--eval-samples", "200"])
        == 0
    )
    printed = capsys.readouterr().out
    for label in ["ELBO", "IWELBO (n = 5)", "HVI", "IWHVI (m = 5)", "DIWHVI (n = 5, m = 5)"]:
        assert label in printed
    assert (tmp_path / "cone_table.txt").read_text().startswith("Noisy cone")
    assert (tmp_path / "cone_posteriors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(tmp_path) in printed


def test_bad_arguments_give_usage_errors():
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--steps", "0"])
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


def test_the_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "ppl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "quickstart" in result.stdout
