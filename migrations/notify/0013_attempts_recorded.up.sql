-- GET /v1/admin/attempts (what `notifyctl tail` follows): attempts in the order they were
-- recorded. attempts is append-only, so this index costs one insert per attempt and never
-- stops a HOT update.
CREATE INDEX attempts_recorded ON attempts (recorded_at, delivery_id, attempt);
