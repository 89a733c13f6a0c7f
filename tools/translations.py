"""Extract messages, fill the Polish catalog from tools/pl.py, compile it (make translations)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from pl import PL

TARGET = ROOT / "src/twilio_chat/web/translations/pl/LC_MESSAGES"


def main() -> None:
    """Rebuild messages.po and messages.mo for Polish."""
    pot = ROOT / "build/messages.pot"
    pot.parent.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "N_",
            "--no-location",
            "--omit-header",
            "--sort-output",
            "-o",
            str(pot),
            "src",
        ],
        check=True,
        cwd=ROOT,
    )
    with pot.open("rb") as fh:
        catalog = read_po(fh, locale="pl")
    missing = [m.id for m in catalog if m.id and m.id not in PL]
    if missing:
        sys.exit("untranslated: " + "; ".join(map(str, missing)))
    for message in catalog:
        if message.id:
            message.string = PL[message.id]
    TARGET.mkdir(parents=True, exist_ok=True)
    with (TARGET / "messages.po").open("wb") as fh:
        write_po(fh, catalog, omit_header=False, no_location=True)
    with (TARGET / "messages.mo").open("wb") as fh:
        write_mo(fh, catalog)
    print(f"{len(catalog)} messages translated")


if __name__ == "__main__":
    main()
