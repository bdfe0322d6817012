-- Cancel finds a delivery's unpublished outbox rows by the delivery-id header.
CREATE INDEX outbox_pending_delivery ON outbox ((headers ->> 'delivery-id')) WHERE published_at IS NULL;
