-- The second engine: events are published right after commit and the outbox is for recovery; a
-- message that can never be published is kept as dead with its reason; orders stuck pending are
-- swept.
ALTER TABLE outbox
    ADD COLUMN dead_at     TIMESTAMPTZ,
    ADD COLUMN dead_reason TEXT;

DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (domain, id) WHERE published_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead ON outbox (domain, id) WHERE dead_at IS NOT NULL;

ALTER TABLE orders ADD COLUMN redriven_at TIMESTAMPTZ;
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'pending';

-- A reservation refused because its order was given up before the stock answer came.
ALTER TABLE stock_reservations DROP CONSTRAINT stock_reservations_status_check;
ALTER TABLE stock_reservations ADD CONSTRAINT stock_reservations_status_check
    CHECK (status IN ('reserved', 'rejected', 'released', 'sold', 'abandoned'));
