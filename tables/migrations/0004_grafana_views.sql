-- Grafana reads Postgres only through the views below (dashboards in grafana/), so a
-- change to the tables needs the views kept in step, never the dashboards.
--
-- service_metrics: periodic copies of each worker's in-process counters and gauges
-- (tables/metrics_writer.py, every POSITION_MANAGER_METRICS_WRITE_INTERVAL seconds).
-- `delta` is what a counter grew by since the previous row of the same worker process
-- and series (its whole value on the process's first row), so per-minute rates are
-- plain sums that filter on `at` by index. kind: counter | gauge | setting.
CREATE TABLE IF NOT EXISTS service_metrics (
    at TIMESTAMPTZ NOT NULL,
    worker TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    kind VARCHAR(8) NOT NULL,
    name TEXT NOT NULL,
    labels JSONB NOT NULL DEFAULT '{}'::jsonb,
    value NUMERIC,
    delta NUMERIC
);
CREATE INDEX IF NOT EXISTS idx_service_metrics_name_at ON service_metrics (name, at);
CREATE INDEX IF NOT EXISTS idx_service_metrics_at ON service_metrics (at);

-- Every position leg with its features computed at query time: the sink stores
-- `position_size_norm` without the portfolio total and `time_held_minutes` as of the
-- write, so both are derived here (SPEC §4.4, price = mark, else entry price as §5).
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

-- The portfolio as the sink last wrote it (one row, `time` = now).
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

-- Closed tumbling windows of the portfolio (POSITION_MANAGER_PORTFOLIO_WINDOW each).
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

-- Snapshot history, the JSON fields as columns.
CREATE OR REPLACE VIEW v_position_snapshots AS
SELECT
    s.created_at AS time,
    s.id AS snapshot_id,
    s.position_id,
    s.asset,
    s.mode,
    s.snapshot_data ->> 'side' AS side,
    NULLIF(s.snapshot_data ->> 'size', '')::NUMERIC AS size,
    NULLIF(s.snapshot_data ->> 'average_entry_price', '')::NUMERIC AS average_entry_price,
    NULLIF(s.snapshot_data ->> 'current_price', '')::NUMERIC AS current_price,
    NULLIF(s.snapshot_data ->> 'unrealized_pnl', '')::NUMERIC AS unrealized_pnl,
    NULLIF(s.snapshot_data ->> 'realized_pnl', '')::NUMERIC AS realized_pnl,
    NULLIF(s.snapshot_data ->> 'total_fees', '')::NUMERIC AS total_fees,
    NULLIF(s.snapshot_data ->> 'unrealized_pnl_pct', '')::NUMERIC AS unrealized_pnl_pct,
    NULLIF(s.snapshot_data ->> 'position_size_norm', '')::NUMERIC AS position_size_norm,
    NULLIF(s.snapshot_data ->> 'time_held_minutes', '')::NUMERIC AS time_held_minutes,
    (s.snapshot_data ->> 'version')::BIGINT AS version
FROM position_snapshots s;

-- Counter increments with the labels the dashboards split by.
CREATE OR REPLACE VIEW v_service_counters AS
SELECT
    at AS time,
    worker,
    name,
    labels ->> 'source' AS source,
    labels ->> 'result' AS result,
    labels ->> 'event_type' AS event_type,
    labels ->> 'field' AS field,
    labels ->> 'consumer' AS consumer,
    labels ->> 'table' AS table_name,
    labels ->> 'kind' AS note_kind,
    labels,
    delta
FROM service_metrics
WHERE kind = 'counter';

CREATE OR REPLACE VIEW v_service_gauges AS
SELECT
    at AS time,
    worker,
    name,
    labels ->> 'consumer' AS consumer,
    labels,
    value
FROM service_metrics
WHERE kind = 'gauge';

-- Per-minute totals of every counter series over all workers.
CREATE OR REPLACE VIEW v_health_minutely AS
SELECT
    date_trunc('minute', at) AS time,
    name,
    labels,
    SUM(delta) AS total
FROM service_metrics
WHERE kind = 'counter'
GROUP BY 1, 2, 3;

-- Workers that reported metrics, and when they last did.
CREATE OR REPLACE VIEW v_workers AS
SELECT
    worker,
    MAX(started_at) AS started_at,
    MAX(at) AS last_seen,
    EXTRACT(EPOCH FROM (now() - MAX(at))) AS seconds_since_report
FROM service_metrics
GROUP BY worker;

-- Sink lag: the newest lag gauge per consumer and how old the newest stored change is.
CREATE OR REPLACE VIEW v_sink_lag AS
SELECT
    at AS time,
    worker,
    labels ->> 'consumer' AS consumer,
    value AS lag_seconds
FROM service_metrics
WHERE kind = 'gauge' AND name = 'pm_consumer_lag_seconds';

-- The configured POSITION_MANAGER_MAX_EXPOSURE_USDT as last reported by a worker
-- (NULL when no limit is configured or no worker has reported yet).
CREATE OR REPLACE VIEW v_exposure_limit AS
SELECT
    (SELECT value FROM service_metrics
     WHERE kind = 'setting' AND name = 'max_exposure_usdt'
     ORDER BY at DESC LIMIT 1) AS max_exposure_usdt;

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

-- The Model Service's two rules (SPEC §1): skip BUY above a size norm of 0.8,
-- take profit at an unrealized PnL of 3.0 %.
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
