-- The subjects that have a license issued, on their own: the licensing
-- indicators count only applications that ended in a license (the catalogue's
-- `only_subjects_with = "license_issued"`), and asking that of each of a
-- month's decision facts through facts_by_subject reads pages from all over
-- an index as large as the table. This one holds only license_issued facts,
-- so the same lookups stay in a few cached pages.
CREATE INDEX facts_license_issued_subjects ON facts (subject) WHERE kind = 'license_issued';
