"""Every setting is documented: README.md's configuration table names each one as ``EMANET_<FIELD>``."""

from __future__ import annotations

import re
from pathlib import Path

from emanet.core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    table_rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    documented = {name for row in table_rows for name in re.findall(r"`?(EMANET_[A-Z0-9_]+)`?", row)}
    expected = {f"EMANET_{field.upper()}" for field in Settings.model_fields}
    missing = sorted(expected - documented)
    assert not missing, f"add these settings to README.md's configuration table: {', '.join(missing)}"
    unknown = sorted(name for name in documented - expected if not name.startswith("EMANET_TEST_"))
    assert not unknown, f"README.md documents settings that do not exist: {', '.join(unknown)}"
