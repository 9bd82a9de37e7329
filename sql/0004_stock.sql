-- Stock in three buckets: on hand (`stock`, what can be ordered), reserved for orders awaiting
-- payment, and sold. A reservation moves units between them; their sum only changes when an
-- admin or a partner sets the stock.
ALTER TABLE products
    ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    ADD COLUMN sold     INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0);

-- One row per order that asked for stock: what was reserved at which unit price, and where it went.
CREATE TABLE stock_reservations (
    order_id   BIGINT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'sold')),
    lines      JSONB NOT NULL,
    total      NUMERIC(14, 2),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TRIGGER stock_reservations_updated_at BEFORE UPDATE ON stock_reservations
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
