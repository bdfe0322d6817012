DROP INDEX attempts_recorded;
