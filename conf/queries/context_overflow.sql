-- LLM calls cut off by the token limit (finish_reason length): context or max_tokens overflow.
--
-- Providers name this stop reason differently: OpenAI / Mistral `length`, Anthropic `max_tokens`
-- and `model_context_window_exceeded`, Gemini / Vertex `MAX_TOKENS` (compared case-insensitively).
-- finish_reason holds every choice's reason, comma-separated; a call matches when any choice
-- does. input_tokens near the model's context window means the prompt overflowed; output_tokens
-- equal to the request's max_tokens means the answer was truncated. A call recorded by two
-- instrumentations is listed once (spans with duplicate_of set are left out).
--
-- param: since INTERVAL = 7 days -- how far back from now
-- param: reasons VARCHAR = length,max_tokens,model_context_window_exceeded -- comma-separated stop reasons to match
-- param: limit INTEGER = 100 -- how many calls, latest first
--
-- tracelake query --saved context_overflow --param since=24h
SELECT
  trace_id,
  span_id,
  start_time,
  service_name,
  provider,
  coalesce(request_model, response_model) AS model,
  finish_reason,
  input_tokens,
  output_tokens,
  attributes['gen_ai.request.max_tokens'] AS max_tokens,
  prompt_version,
  tenant_id
FROM spans
WHERE dt >= CAST(now() - $since AS DATE)
  AND start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
  AND span_type = 'llm'
  AND duplicate_of IS NULL
  AND list_has_any(
    list_transform(string_split(lower(finish_reason), ','), lambda r: trim(r)),
    list_transform(string_split(lower($reasons), ','), lambda r: trim(r)))
ORDER BY start_time DESC, span_id
LIMIT $limit;
