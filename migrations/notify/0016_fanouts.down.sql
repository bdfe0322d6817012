DROP TABLE fanout_chunks;
DROP TABLE fanouts;
