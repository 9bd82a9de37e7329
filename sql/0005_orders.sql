-- Orders, their lines at the prices the catalogue set, and the history of every status change.
CREATE TABLE orders (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'awaiting_payment', 'paid', 'rejected', 'cancelled')),
    total_price    NUMERIC(14, 2),
    reason         TEXT,
    -- The PlaceOrder command: a retry with the same idempotency key finds its order here.
    command_id     UUID NOT NULL UNIQUE,
    request_hash   TEXT NOT NULL,
    -- Where the reply goes once the stock answer is in.
    reply_to       TEXT,
    correlation_id TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_by_user ON orders (user_id, id DESC);

CREATE TRIGGER orders_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE order_items (
    id         BIGSERIAL PRIMARY KEY,
    order_id   BIGINT NOT NULL REFERENCES orders (id),
    product_id BIGINT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    price      NUMERIC(12, 2),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX order_items_order ON order_items (order_id);

CREATE TABLE order_status_history (
    id       BIGSERIAL PRIMARY KEY,
    order_id BIGINT NOT NULL REFERENCES orders (id),
    status   TEXT NOT NULL,
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX order_status_history_order ON order_status_history (order_id, id);

-- Payments: one per order, for the server's total.
CREATE TABLE payments (
    id          BIGSERIAL PRIMARY KEY,
    order_id    BIGINT NOT NULL UNIQUE,
    user_id     BIGINT NOT NULL,
    amount      NUMERIC(14, 2) NOT NULL CHECK (amount >= 0),
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason      TEXT,
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_pending_expiry ON payments (expires_at) WHERE status = 'pending';

CREATE TRIGGER payments_updated_at BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Every attempt to pay, whatever its outcome; a charge is the one 'succeeded' row of a payment.
CREATE TABLE payment_transactions (
    id         BIGSERIAL PRIMARY KEY,
    payment_id BIGINT NOT NULL REFERENCES payments (id),
    money      NUMERIC(14, 2) NOT NULL,
    outcome    TEXT NOT NULL,
    source     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX payment_transactions_one_charge ON payment_transactions (payment_id)
    WHERE outcome = 'succeeded';
