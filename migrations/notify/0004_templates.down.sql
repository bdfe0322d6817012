ALTER TABLE notifications DROP COLUMN IF EXISTS template;
ALTER TABLE notifications DROP COLUMN IF EXISTS localized;
DROP TABLE IF EXISTS templates;
