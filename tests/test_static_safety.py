"""The static path never runs the audited code and never imports torch, transformers or kvpress."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import STATIC_PRESSES, run_cli


def test_audited_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed.marker"
    press = tmp_path / "booby_trap.py"
    press.write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        + (STATIC_PRESSES / "alg2_modulo.py").read_text().split('"""', 2)[2]
    )
    result = run_cli("check", str(press), "-f", "json")
    assert result.exit_code == 0 and result.json()["presses"]
    assert not marker.exists()


def test_check_imports_no_heavy_package() -> None:
    """A fresh interpreter runs a full check, including the kvpress module target, then looks."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from kvaudit.cli import app\n"
        f"result = CliRunner().invoke(app, ['check', 'kvpress.presses.chunkkv_press', {str(STATIC_PRESSES)!r}])\n"
        "assert result.exit_code == 1, result.output\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'kvpress') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "none"
