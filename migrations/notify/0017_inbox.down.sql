DROP TABLE inbox_events;
DROP TABLE inbox_items;
DROP TABLE inbox_counts;
