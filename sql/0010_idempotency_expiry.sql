-- Idempotency keys per the IETF draft: a recorded command remembers what it asked for (a hash
-- of the command without its id), so the same key with another request is refused; keys and
-- the command ledger expire, and the workers prune them by age.
ALTER TABLE processed_commands ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';

CREATE INDEX processed_commands_by_age ON processed_commands (domain, created_at);

-- An order forgets its PlaceOrder's id once the key has expired, so the key can be used again.
ALTER TABLE orders ALTER COLUMN command_id DROP NOT NULL;

CREATE INDEX orders_keys_by_age ON orders (created_at) WHERE command_id IS NOT NULL;
