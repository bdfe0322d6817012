DROP TABLE IF EXISTS skipped_events;
