"""Numbered SQL migrations, applied in order by `shopstream migrate`."""
