"""tracelake's core: the contracts every component shares (lake schema, attribute conventions, the
processor and sink interfaces, units, source references). It imports nothing else of tracelake;
processors and sinks import it, and the pipeline assembles them (core ← processors, sinks ← pipeline)."""
