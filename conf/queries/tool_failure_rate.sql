-- Tool failure rate per tool: calls, failures and latency of every tool the agents call.
--
-- A tool call is a span of type tool (gen_ai.operation.name execute_tool, OpenInference TOOL,
-- traceloop tool); its tool is gen_ai.tool.name / tool.name, else the span name. A failure is a
-- span with status ERROR; example_error is one of their status messages. With tail sampling on,
-- `spans` holds kept traces only, and samplers keep failing traces: rates are then upper bounds.
--
-- param: since INTERVAL = 7 days -- how far back from now
-- param: min_calls INTEGER = 1 -- leave out tools with fewer calls
--
-- tracelake query --saved tool_failure_rate --param since=24h --param min_calls=20
SELECT
  coalesce(tool_name, name) AS tool,
  count(*) AS calls,
  count(*) FILTER (WHERE status_code = 'ERROR') AS failures,
  round(count(*) FILTER (WHERE status_code = 'ERROR') / count(*), 4) AS failure_rate,
  round(quantile_cont(duration_ms, 0.50), 1) AS p50_ms,
  round(quantile_cont(duration_ms, 0.95), 1) AS p95_ms,
  any_value(status_message) FILTER (WHERE status_code = 'ERROR') AS example_error
FROM spans
WHERE dt >= CAST(now() - $since AS DATE)
  AND start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
  AND span_type = 'tool'
GROUP BY ALL
HAVING count(*) >= $min_calls
ORDER BY failure_rate DESC, calls DESC, tool;
