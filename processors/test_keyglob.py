"""Key globs translate to RE2 with fnmatch-case semantics, alone and as alternatives."""

from __future__ import annotations

import fnmatch

import pyarrow as pa
import pyarrow.compute as pc

from processors.keyglob import globs_to_re2, re2_error

KEYS = ["gen_ai.prompt", "gen_ai.completion.0", "llm.input_messages.0.message.content", "a[b", "x.y", "X.Y", "^$."]


def test_alternatives_match_like_fnmatchcase() -> None:
    for patterns in (["gen_ai.*"], ["gen_ai.prompt", "llm.*.content"], ["a[[]b", "x.?"], ["[!g]*"], ["^$?"]):
        regex = globs_to_re2(patterns)
        assert re2_error(regex) is None, regex
        got = pc.match_substring_regex(pa.array(KEYS), regex).to_pylist()
        assert got == [any(fnmatch.fnmatchcase(k, p) for p in patterns) for k in KEYS], (patterns, regex)
