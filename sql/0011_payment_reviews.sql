-- Partner reports bound to the session the platform opened: each session has a reference the
-- platform issued, which the provider must echo in its signed reports.
ALTER TABLE payment_sessions ADD COLUMN reference TEXT;
UPDATE payment_sessions SET reference = 'ps_' || md5(token) WHERE reference IS NULL;
ALTER TABLE payment_sessions ALTER COLUMN reference SET NOT NULL;
CREATE UNIQUE INDEX payment_sessions_reference ON payment_sessions (reference);

-- Reconciliation cases: money a provider reports as moved that the platform cannot keep as
-- the order's payment (wrong amount, after expiry, a second charge). One case per charge: the
-- provider's own reference of that charge.
CREATE TABLE payment_reviews (
    id                BIGSERIAL PRIMARY KEY,
    payment_id        BIGINT NOT NULL REFERENCES payments (id),
    order_id          BIGINT NOT NULL,
    reason            TEXT NOT NULL CHECK (
        reason IN ('amount_mismatch', 'paid_after_expiry', 'paid_after_failure', 'duplicate_success')
    ),
    refund_required   BOOLEAN NOT NULL,
    provider          TEXT NOT NULL,
    reference         TEXT NOT NULL,
    session_reference TEXT NOT NULL,
    amount            NUMERIC(14, 2) NOT NULL,
    expected_amount   NUMERIC(14, 2) NOT NULL,
    payment_status    TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, reference)
);

CREATE INDEX payment_reviews_payment ON payment_reviews (payment_id);
