-- Traces with thumbs-down feedback and their failing step: where to start reading each one.
--
-- A thumbs-down is a feedback event (POST /v1/feedback, Langfuse scores, Phoenix annotations, or
-- spans with feedback.value) whose value is at most max_value. The failing step is the first span
-- with status ERROR that has no failing child (where the failure started, not the parents it
-- propagated to); when no span failed it is the span the feedback was given on, if any.
-- step_source says which. Sampled-out traces are promoted into `spans` by late negative feedback
-- when tail sampling's holdback is on; otherwise their steps are missing.
--
-- param: since INTERVAL = 7 days -- feedback given within this long from now
-- param: max_value DOUBLE = 0 -- values at or below this are thumbs-down (e.g. 0 of 0/1, or -1)
-- param: feedback_name VARCHAR = null -- only feedback of this name, e.g. user_rating (null: all)
-- param: limit INTEGER = 50 -- how many traces, latest feedback first
--
-- tracelake query --saved thumbs_down_traces --param since=24h --param feedback_name=thumbs
WITH down AS (
  SELECT
    trace_id,
    min(value) AS value,
    arg_min(name, value) AS feedback_name,
    arg_min(comment, value) AS comment,
    arg_min(span_id, value) AS rated_span_id,
    max("time") AS feedback_time,
    count(*) AS events
  FROM feedback
  WHERE dt >= CAST(now() - $since AS DATE)
    AND "time" >= CAST(now() - $since AS TIMESTAMPTZ_NS)
    AND value <= $max_value
    AND ($feedback_name IS NULL OR name = $feedback_name)
  GROUP BY trace_id
),
trace_spans AS (
  SELECT s.* FROM spans s SEMI JOIN down d ON s.trace_id = d.trace_id
),
first_error AS (
  SELECT e.*
  FROM trace_spans e
  WHERE e.status_code = 'ERROR'
    AND NOT EXISTS (
      SELECT 1 FROM trace_spans c
      WHERE c.trace_id = e.trace_id AND c.parent_span_id = e.span_id AND c.status_code = 'ERROR'
    )
  QUALIFY row_number() OVER (PARTITION BY e.trace_id ORDER BY e.start_time, e.span_id) = 1
)
SELECT
  d.trace_id,
  d.feedback_time,
  d.feedback_name,
  d.value,
  d.comment,
  d.events AS feedback_events,
  coalesce(e.span_id, r.span_id) AS failing_span_id,
  coalesce(e.name, r.name) AS failing_step,
  coalesce(e.span_type, r.span_type) AS step_type,
  coalesce(e.tool_name, r.tool_name) AS tool_name,
  coalesce(e.request_model, r.request_model) AS model,
  coalesce(e.status_message, r.status_message) AS status_message,
  CASE WHEN e.span_id IS NOT NULL THEN 'first error' WHEN r.span_id IS NOT NULL THEN 'rated span' END
    AS step_source,
  t.root_name,
  t.error_count,
  t.prompt_versions,
  t.cost_usd
FROM down d
LEFT JOIN first_error e ON e.trace_id = d.trace_id
LEFT JOIN trace_spans r ON r.trace_id = d.trace_id AND r.span_id = d.rated_span_id
LEFT JOIN traces t ON t.trace_id = d.trace_id
ORDER BY d.feedback_time DESC, d.trace_id
LIMIT $limit;
