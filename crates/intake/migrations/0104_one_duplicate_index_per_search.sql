-- The category-and-time index of 0100 served the first duplicate search;
-- 0101's place and address indexes replaced it, and no query needs it since.
-- Left in place it cost every submit an index insert, and it was the plan a
-- batch writer's generic plan (made while the table was small) could pick
-- and keep: reading a category's whole window per submit as the city grows.
DROP INDEX IF EXISTS reports_open_masters;
