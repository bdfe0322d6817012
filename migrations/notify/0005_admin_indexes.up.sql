-- Indexes for the admin filters (GET /v1/admin/notifications) and stats.
CREATE INDEX notifications_category_created ON notifications (category, created_at DESC, id DESC);
CREATE INDEX notifications_created_id ON notifications (created_at DESC, id DESC);
CREATE INDEX deliveries_status_created ON deliveries (status, created_at DESC);
CREATE INDEX deliveries_channel_created ON deliveries (channel, created_at DESC);
CREATE INDEX deliveries_address ON deliveries (address);
CREATE INDEX deliveries_created ON deliveries (created_at DESC);
