-- Refresh-token families get a row of their own, which refresh and logout lock (issue 11: a
-- refresh racing a logout left the new token valid); failed logins are counted per email.
CREATE TABLE refresh_families (
    family_id  UUID PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The expiry of its newest token: past it, no token of the family can be used.
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

CREATE INDEX refresh_families_user ON refresh_families (user_id);
CREATE INDEX refresh_families_expiry ON refresh_families (expires_at);

INSERT INTO refresh_families (family_id, user_id, created_at, expires_at, revoked_at)
SELECT family_id, min(user_id), min(issued_at), max(expires_at),
       CASE WHEN bool_or(revoked_at IS NOT NULL) THEN max(revoked_at) END
FROM refresh_tokens
GROUP BY family_id;

ALTER TABLE refresh_tokens
    ADD CONSTRAINT refresh_tokens_family_fk
    FOREIGN KEY (family_id) REFERENCES refresh_families (family_id) ON DELETE CASCADE;

CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- One row per email that failed to log in lately (the SHA-256 of its lowercase form, whether
-- or not an account has it): the failures of the window that began at window_start.
CREATE TABLE login_budgets (
    email_key    BYTEA PRIMARY KEY,
    window_start TIMESTAMPTZ NOT NULL,
    -- An attempt counts from its start (so that parallel guesses cannot overrun the budget);
    -- a successful one takes its count back.
    failures     INTEGER NOT NULL
);

CREATE INDEX login_budgets_window ON login_budgets (window_start);
