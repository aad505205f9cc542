"""tracelake's pipeline: receivers, bus, worker, lake queries and the CLI."""

import os as _os

# Read once by Arrow's bundled jemalloc when pyarrow loads, so it must be set before that: freed
# memory is kept for the next batch instead of being returned to the OS at once. It only matters
# where jemalloc is the pool in use, which `tracelake run/worker` choose
# (pipeline.service.use_server_memory_pool explains the measurement).
_os.environ.setdefault("JE_ARROW_MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
