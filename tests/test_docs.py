"""The README's configuration table tells the truth about Settings."""

import re
from pathlib import Path

from fleet.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(FLEET_[A-Z_]+)` \|", README.read_text(), re.MULTILINE))
    actual = {f"FLEET_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
