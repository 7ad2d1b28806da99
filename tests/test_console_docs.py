"""docs/console.rst's transcripts are what a real console prints: regenerated and compared.

``docs/_tools/console_transcripts.py`` runs real commands against a real
console and writes ``docs/_generated/console_*.txt``, which the page
includes. This runs it again, into ``tmp_path``, and compares.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import archangel

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Where the archangel under test comes from, for the subprocess that runs the script.
SRC = str(Path(archangel.__file__).resolve().parent.parent)


def loose(text: str) -> str:
    """Line numbers outside the transcripts' own code set aside: another Python, an edit."""
    return re.sub(r'(File "(?!/srv/jobs\.py)[^"]+", line )\d+', r"\1N", text)


def test_the_console_transcripts_in_the_docs_are_what_the_console_prints(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(DOCS / "_tools" / "console_transcripts.py"), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in tmp_path.glob("console_*.txt"))
    committed = sorted(p.name for p in (DOCS / "_generated").glob("console_*.txt"))
    assert made == committed and made, "run: python docs/_tools/console_transcripts.py"
    page = (DOCS / "console.rst").read_text()
    for name in made:
        assert f".. literalinclude:: _generated/{name}" in page, name
        fresh = loose((tmp_path / name).read_text())
        assert fresh == loose((DOCS / "_generated" / name).read_text()), (
            f"docs/_generated/{name} is out of date: run python docs/_tools/console_transcripts.py"
        )
        assert "\xff" not in fresh and "\r" not in fresh
