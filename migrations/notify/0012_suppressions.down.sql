DROP TABLE IF EXISTS bounce_reports;
DROP TABLE IF EXISTS soft_bounces;
DROP TABLE IF EXISTS suppressions;
