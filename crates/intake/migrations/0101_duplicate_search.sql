-- Duplicate search without reading a category's whole window. The first
-- index (0100) narrows by category and time only, so every submit read every
-- open report of its category from the last days: cost grew with the city's
-- report volume. These narrow by place: a GiST index on the report's point
-- answers "inside this box" directly, and a B-tree finds a National Address
-- short code.
CREATE INDEX reports_open_masters_near ON reports USING gist (point(longitude, latitude))
    WHERE duplicate_of IS NULL AND status NOT IN ('resolved', 'closed') AND latitude IS NOT NULL;
CREATE INDEX reports_open_masters_at_address ON reports (national_address_short, category_code)
    WHERE duplicate_of IS NULL AND status NOT IN ('resolved', 'closed')
      AND national_address_short IS NOT NULL;
