"""Text as PostgreSQL keeps it: a `text` column refuses NUL (U+0000), so no field takes one."""

from __future__ import annotations

# Patterns (in the JSON schemas too, so a client knows): any text without NUL; and one with a
# character str.strip() keeps (blank is empty once stripped, with what Python strips and JSON
# Schema's \s does not).
NO_NUL = r"^[^\u0000]*$"
_ANY = r"[^\u0000]"
_KEPT = r"[^\s\u0000\u001c-\u001f\u0085]"
NOT_BLANK = rf"^{_ANY}*{_KEPT}{_ANY}*$"
# At least three characters once stripped, from its first to its last non-blank one.
THREE_KEPT = rf"^{_ANY}*{_KEPT}{_ANY}+{_KEPT}{_ANY}*$"
