-- Error rate by prompt version: the share of traces with at least one failed span, per version.
--
-- Reads `traces` (every trace, kept or sampled out), so the rates are exact under tail sampling.
-- A trace counts as failed when any of its spans has status ERROR. A trace that used two prompt
-- versions counts under both; traces without a version are grouped as '(none)'. Compare versions
-- with enough traffic (min_traces) before trusting a difference.
--
-- param: since INTERVAL = 7 days -- how far back from now
-- param: min_traces INTEGER = 1 -- leave out versions with fewer traces
--
-- tracelake query --saved error_rate_by_prompt_version --param since=48h --param min_traces=50
WITH t AS (
  SELECT
    unnest(CASE WHEN len(coalesce(prompt_versions, [])) = 0 THEN ['(none)'] ELSE prompt_versions END)
      AS prompt_version,
    error_count,
    llm_count
  FROM traces
  WHERE start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
)
SELECT
  prompt_version,
  count(*) AS traces,
  count(*) FILTER (WHERE error_count > 0) AS failed_traces,
  round(count(*) FILTER (WHERE error_count > 0) / count(*), 4) AS error_rate,
  sum(error_count)::BIGINT AS error_spans,
  sum(llm_count)::BIGINT AS llm_calls
FROM t
GROUP BY ALL
HAVING count(*) >= $min_traces
ORDER BY error_rate DESC, traces DESC, prompt_version;
