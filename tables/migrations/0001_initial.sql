-- SPEC §9: positions (one row per asset and mode), snapshots, the fill ledger and
-- the portfolio history. Money is DECIMAL(20,8).
CREATE TABLE IF NOT EXISTS positions (
    id UUID PRIMARY KEY,
    asset VARCHAR(20) NOT NULL,
    mode VARCHAR(20) NOT NULL,
    size DECIMAL(20, 8) NOT NULL,
    side VARCHAR(8) NOT NULL,
    average_entry_price DECIMAL(20, 8) NOT NULL,
    current_price DECIMAL(20, 8),
    unrealized_pnl DECIMAL(20, 8) NOT NULL,
    realized_pnl DECIMAL(20, 8) NOT NULL,
    total_fees DECIMAL(20, 8) NOT NULL,
    long_size DECIMAL(20, 8) NOT NULL,
    short_size DECIMAL(20, 8) NOT NULL,
    exchange_size DECIMAL(20, 8),
    exchange_avg_price DECIMAL(20, 8),
    version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    opened_at TIMESTAMPTZ,
    last_updated TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ,
    last_snapshot_at TIMESTAMPTZ,
    last_price_at TIMESTAMPTZ,
    unrealized_pnl_pct DECIMAL(20, 8),
    time_held_minutes INTEGER,
    position_size_norm DECIMAL(20, 8),
    CONSTRAINT positions_asset_mode_key UNIQUE (asset, mode)
);
CREATE INDEX IF NOT EXISTS idx_positions_asset ON positions (asset);
CREATE INDEX IF NOT EXISTS idx_positions_mode ON positions (mode);
CREATE INDEX IF NOT EXISTS idx_positions_current_price ON positions (current_price);
CREATE INDEX IF NOT EXISTS idx_positions_version ON positions (version);

CREATE TABLE IF NOT EXISTS position_snapshots (
    id UUID PRIMARY KEY,
    position_id UUID NOT NULL,
    asset VARCHAR(20) NOT NULL,
    mode VARCHAR(20) NOT NULL,
    snapshot_data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_position_snapshots_position_created
    ON position_snapshots (position_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_position_snapshots_asset_created
    ON position_snapshots (asset, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_position_snapshots_created ON position_snapshots (created_at);

CREATE TABLE IF NOT EXISTS position_fills (
    fill_id TEXT NOT NULL,
    position_id UUID NOT NULL,
    asset VARCHAR(20) NOT NULL,
    mode VARCHAR(20) NOT NULL,
    quantity DECIMAL(20, 8) NOT NULL,
    price DECIMAL(20, 8) NOT NULL,
    fee DECIMAL(20, 8) NOT NULL,
    is_funding BOOLEAN NOT NULL DEFAULT FALSE,
    order_id TEXT,
    executed_at TIMESTAMPTZ,
    trace_id TEXT,
    position_version BIGINT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT position_fills_identity UNIQUE (asset, mode, fill_id)
);
CREATE INDEX IF NOT EXISTS idx_position_fills_position ON position_fills (position_id, position_version);

CREATE TABLE IF NOT EXISTS portfolio_metrics (
    window_start TIMESTAMPTZ PRIMARY KEY,
    window_end TIMESTAMPTZ NOT NULL,
    total_exposure_usdt DECIMAL(28, 8) NOT NULL,
    net_exposure_usdt DECIMAL(28, 8) NOT NULL,
    total_unrealized_pnl_usdt DECIMAL(28, 8) NOT NULL,
    total_realized_pnl_usdt DECIMAL(28, 8) NOT NULL,
    total_pnl_usdt DECIMAL(28, 8) NOT NULL,
    open_positions_count INTEGER NOT NULL,
    long_positions_count INTEGER NOT NULL,
    short_positions_count INTEGER NOT NULL,
    calculated_at TIMESTAMPTZ NOT NULL
);
