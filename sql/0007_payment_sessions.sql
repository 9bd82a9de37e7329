-- A payment's sessions with its provider: the shopper pays on the provider's page (redirect_url),
-- for the payment's amount; the provider reports the outcome on payments.provider-events.
CREATE TABLE payment_sessions (
    token        TEXT PRIMARY KEY,
    payment_id   BIGINT NOT NULL REFERENCES payments (id),
    provider     TEXT NOT NULL,
    amount       NUMERIC(14, 2) NOT NULL CHECK (amount >= 0),
    redirect_url TEXT NOT NULL,
    return_path  TEXT NOT NULL,
    va_number    TEXT NOT NULL DEFAULT '',
    qr_code_url  TEXT NOT NULL DEFAULT '',
    expires_at   TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payment_sessions_payment ON payment_sessions (payment_id, created_at DESC);
