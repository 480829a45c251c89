-- The fill ledger also records the changes that set a leg's size or average price
-- without a fill (exchange-created legs, adopted exchange avg prices, validation
-- corrections) as `adjustment` rows carrying the new absolute size (`quantity`) and
-- average price (`price`), so that a replay of the ledger reproduces the position.
ALTER TABLE position_fills ADD COLUMN IF NOT EXISTS kind VARCHAR(16) NOT NULL DEFAULT 'fill';
CREATE INDEX IF NOT EXISTS idx_position_fills_asset_mode_version
    ON position_fills (asset, mode, position_version);

-- Seed indexes (SPEC §9): (asset, mode) is the unique key; listing snapshots of a
-- position newest first is served by (asset, mode, created_at DESC).
CREATE INDEX IF NOT EXISTS idx_positions_asset_mode ON positions (asset, mode);
CREATE INDEX IF NOT EXISTS idx_positions_open ON positions (asset) WHERE size <> 0;
CREATE INDEX IF NOT EXISTS idx_position_snapshots_asset_mode_created
    ON position_snapshots (asset, mode, created_at DESC);
