-- Paging a position's snapshots newest first: the page's ids come from an index-only
-- scan (no heap reads for the rows skipped by OFFSET); only the page's rows are read.
CREATE INDEX IF NOT EXISTS idx_position_snapshots_page
    ON position_snapshots (asset, mode, created_at DESC, id DESC);
DROP INDEX IF EXISTS idx_position_snapshots_asset_mode_created;
