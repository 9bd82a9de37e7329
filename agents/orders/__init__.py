"""Orders and the checkout saga."""

DOMAIN = "orders"
