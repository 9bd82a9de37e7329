"""Identity: accounts, tokens and OAuth2 logins."""

DOMAIN = "users"
