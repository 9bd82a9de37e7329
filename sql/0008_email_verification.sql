-- Email verification (issue 11): an OAuth identity is linked to an existing account only if its
-- email was verified, and a login's state is bound to the browser that started it.
ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMPTZ;

-- Accounts whose address a provider already vouched for (they were made or linked by an OAuth
-- login with that verified email) count as verified; password accounts are not, until proven.
UPDATE users u SET email_verified_at = i.created_at
FROM user_identities i
WHERE i.user_id = u.id AND i.email IS NOT NULL AND lower(i.email) = lower(u.email);

-- One row per verification mail: only the token's SHA-256 is kept (the token is in the mail).
-- A token is used once, for the address it was sent to, before it expires.
CREATE TABLE email_verifications (
    token_hash BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX email_verifications_user ON email_verifications (user_id);

-- Logins in flight when this is applied started without a browser nonce: they start again.
DELETE FROM oauth_states;
-- The SHA-256 of the nonce in the browser's cookie, and the account a logged-in owner links to.
ALTER TABLE oauth_states
    ADD COLUMN nonce_hash BYTEA NOT NULL,
    ADD COLUMN link_user_id BIGINT REFERENCES users (id) ON DELETE CASCADE;
