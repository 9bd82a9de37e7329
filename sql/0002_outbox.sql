-- Events written in the same transaction as the change they describe, relayed to Kafka afterwards;
-- and the replies of handled commands, so a redelivered command changes nothing twice.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    domain       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    key          TEXT NOT NULL,
    payload      JSONB NOT NULL,
    headers      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

CREATE INDEX outbox_unpublished ON outbox (domain, id) WHERE published_at IS NULL;

CREATE TABLE processed_commands (
    domain     TEXT NOT NULL,
    command_id UUID NOT NULL,
    reply      JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, command_id)
);

CREATE TABLE platform_flags (
    name   TEXT PRIMARY KEY,
    set_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
