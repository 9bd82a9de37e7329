"""Payments of orders."""

DOMAIN = "payments"
