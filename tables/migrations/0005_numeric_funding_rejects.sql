-- SPEC §9 rev 2: money and sizes as NUMERIC without precision limits. DECIMAL(20,8)
-- could not hold a 5·10^12-unit meme-coin position or a 0.0000000048 price: what the
-- API shows, Postgres now holds digit for digit (every value the bridge accepts is
-- below 10^18 with at most 18 places). Existing values convert exactly.
--
-- `funding_pnl` (SPEC §4.1 rev 2): cumulative funding, also part of realized_pnl.
-- `sink_rejects`: a row Postgres refused, kept with its error so that every later row
-- still lands (the sink never stalls on one record).
--
-- The views over these columns are dropped first and created again below (Postgres
-- cannot change the type of a column a view reads); v_positions gains funding_pnl.
DROP VIEW IF EXISTS v_risk_positions, v_risk_current, v_risk_exposure, v_portfolio_current,
    v_positions_open, v_positions, v_portfolio_history;

ALTER TABLE positions
    ALTER COLUMN size TYPE NUMERIC,
    ALTER COLUMN average_entry_price TYPE NUMERIC,
    ALTER COLUMN current_price TYPE NUMERIC,
    ALTER COLUMN unrealized_pnl TYPE NUMERIC,
    ALTER COLUMN realized_pnl TYPE NUMERIC,
    ALTER COLUMN total_fees TYPE NUMERIC,
    ALTER COLUMN long_size TYPE NUMERIC,
    ALTER COLUMN short_size TYPE NUMERIC,
    ALTER COLUMN exchange_size TYPE NUMERIC,
    ALTER COLUMN exchange_avg_price TYPE NUMERIC,
    ALTER COLUMN unrealized_pnl_pct TYPE NUMERIC,
    ALTER COLUMN position_size_norm TYPE NUMERIC;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS funding_pnl NUMERIC NOT NULL DEFAULT 0;

ALTER TABLE position_fills
    ALTER COLUMN quantity TYPE NUMERIC,
    ALTER COLUMN price TYPE NUMERIC,
    ALTER COLUMN fee TYPE NUMERIC;

ALTER TABLE portfolio_metrics
    ALTER COLUMN total_exposure_usdt TYPE NUMERIC,
    ALTER COLUMN net_exposure_usdt TYPE NUMERIC,
    ALTER COLUMN total_unrealized_pnl_usdt TYPE NUMERIC,
    ALTER COLUMN total_realized_pnl_usdt TYPE NUMERIC,
    ALTER COLUMN total_pnl_usdt TYPE NUMERIC;

CREATE TABLE IF NOT EXISTS sink_rejects (
    id BIGSERIAL PRIMARY KEY,
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    kafka_key TEXT,
    record TEXT,
    error TEXT NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT sink_rejects_record UNIQUE (consumer, topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS idx_sink_rejects_at ON sink_rejects (rejected_at);

CREATE OR REPLACE VIEW v_positions AS
WITH priced AS (
    SELECT p.*, COALESCE(p.current_price, p.average_entry_price) AS valuation_price
    FROM positions p
), totals AS (
    SELECT COALESCE(SUM(ABS(size * valuation_price)), 0) AS total_exposure
    FROM priced WHERE size <> 0
)
SELECT
    p.id AS position_id,
    p.asset,
    p.mode,
    CASE WHEN p.mode = 'one-way' THEN p.asset ELSE p.asset || ' ' || p.mode END AS label,
    p.side,
    p.size,
    ABS(p.size) AS abs_size,
    p.average_entry_price,
    p.current_price,
    p.valuation_price,
    (p.current_price IS NULL) AS price_fallback,
    CASE WHEN p.size <> 0 THEN ABS(p.size * p.valuation_price) ELSE 0 END AS exposure_usdt,
    CASE WHEN p.size <> 0 THEN p.size * p.valuation_price ELSE 0 END AS net_exposure_usdt,
    p.unrealized_pnl,
    p.realized_pnl,
    p.unrealized_pnl + p.realized_pnl AS total_pnl,
    p.total_fees,
    p.funding_pnl,
    CASE WHEN p.size = 0 OR p.average_entry_price = 0 THEN NULL
         ELSE p.unrealized_pnl / (ABS(p.size) * p.average_entry_price) * 100
    END AS unrealized_pnl_pct,
    CASE WHEN p.size <> 0 AND p.opened_at IS NOT NULL
         THEN GREATEST(0, FLOOR(EXTRACT(EPOCH FROM (now() - p.opened_at)) / 60))::INTEGER
         ELSE 0
    END AS time_held_minutes,
    CASE WHEN t.total_exposure = 0 OR p.size = 0 THEN 0
         ELSE ABS(p.size * p.valuation_price) / t.total_exposure
    END AS position_size_norm,
    (p.size <> 0) AS is_open,
    p.exchange_size,
    p.version,
    p.created_at,
    p.opened_at,
    p.closed_at,
    p.last_updated,
    p.last_price_at,
    p.last_snapshot_at
FROM priced p CROSS JOIN totals t;

CREATE OR REPLACE VIEW v_positions_open AS
SELECT * FROM v_positions WHERE is_open;

CREATE OR REPLACE VIEW v_portfolio_current AS
SELECT
    now() AS time,
    COALESCE(SUM(exposure_usdt), 0) AS total_exposure_usdt,
    COALESCE(SUM(net_exposure_usdt), 0) AS net_exposure_usdt,
    COALESCE(SUM(unrealized_pnl) FILTER (WHERE is_open), 0) AS total_unrealized_pnl_usdt,
    COALESCE(SUM(realized_pnl), 0) AS total_realized_pnl_usdt,
    COALESCE(SUM(unrealized_pnl) FILTER (WHERE is_open), 0) + COALESCE(SUM(realized_pnl), 0)
        AS total_pnl_usdt,
    COUNT(*) FILTER (WHERE is_open) AS open_positions_count,
    COUNT(*) FILTER (WHERE size > 0) AS long_positions_count,
    COUNT(*) FILTER (WHERE size < 0) AS short_positions_count,
    MAX(last_updated) AS last_updated
FROM v_positions;

CREATE OR REPLACE VIEW v_portfolio_history AS
SELECT
    window_start AS time,
    window_start,
    window_end,
    total_exposure_usdt,
    net_exposure_usdt,
    total_unrealized_pnl_usdt,
    total_realized_pnl_usdt,
    total_pnl_usdt,
    open_positions_count,
    long_positions_count,
    short_positions_count,
    calculated_at
FROM portfolio_metrics;

CREATE OR REPLACE VIEW v_risk_exposure AS
SELECT
    h.time,
    h.total_exposure_usdt,
    h.net_exposure_usdt,
    l.max_exposure_usdt,
    CASE WHEN l.max_exposure_usdt > 0
         THEN h.total_exposure_usdt / l.max_exposure_usdt * 100
    END AS limit_utilization_pct
FROM v_portfolio_history h CROSS JOIN v_exposure_limit l;

CREATE OR REPLACE VIEW v_risk_current AS
SELECT
    c.time,
    c.total_exposure_usdt,
    c.net_exposure_usdt,
    l.max_exposure_usdt,
    CASE WHEN l.max_exposure_usdt > 0
         THEN c.total_exposure_usdt / l.max_exposure_usdt * 100
    END AS limit_utilization_pct,
    (l.max_exposure_usdt IS NOT NULL AND c.total_exposure_usdt > l.max_exposure_usdt)
        AS limit_exceeded
FROM v_portfolio_current c CROSS JOIN v_exposure_limit l;

CREATE OR REPLACE VIEW v_risk_positions AS
SELECT
    asset,
    mode,
    label,
    side,
    size,
    exposure_usdt,
    position_size_norm,
    unrealized_pnl_pct,
    0.8::NUMERIC AS size_norm_limit,
    3.0::NUMERIC AS take_profit_pct,
    position_size_norm > 0.8 AS size_norm_breach,
    COALESCE(unrealized_pnl_pct >= 3.0, FALSE) AS take_profit_reached
FROM v_positions_open;

