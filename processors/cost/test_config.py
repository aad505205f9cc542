"""The `cost:` block: unknown keys, overrides, overrides_file errors naming the file and entry."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.processor import Registry
from pipeline.config.loader import ConfigError, parse
from processors.cost import CostConfig, CostProcessor, PriceTable, factory, load_overrides_file


def test_defaults_and_unknown_keys() -> None:
    cfg = CostConfig()
    assert (cfg.overrides, cfg.overrides_file, cfg.usage_span_types) == ([], None, ["other"])
    with pytest.raises(ValidationError, match="extra"):
        CostConfig.model_validate({"override": []})
    with pytest.raises(ValidationError):
        CostConfig.model_validate({"overrides": [{"model": "x", "input_mtok": 1, "output_mtok": 1, "cache_mtok": 1}]})


@pytest.mark.parametrize(
    "entry",
    [
        {"model": "x", "input_mtok": 1},  # output_mtok missing: no silent zero
        {"model": "x", "input_mtok": -1, "output_mtok": 1},
        {"model": "x", "input_mtok": float("nan"), "output_mtok": 1},
        {"model": "", "input_mtok": 1, "output_mtok": 1},
        {"model": "x", "input_mtok": "cheap", "output_mtok": 1},
    ],
)
def test_bad_override(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CostConfig.model_validate({"overrides": [entry]})


def test_providers_must_name_genai_prices_ids() -> None:
    assert CostConfig(providers={"My-Proxy": "openai", "ollama": None}).providers == {
        "my-proxy": "openai",
        "ollama": None,
    }
    with pytest.raises(ValidationError, match="not a genai-prices provider id"):
        CostConfig(providers={"proxy": "open-ai"})


def test_overrides_file_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "prices.yaml"
    y.write_text(
        textwrap.dedent(
            """\
            - {model: acme-llm-7b, input_mtok: 0.10, output_mtok: 0.20}
            - model: "ft:gpt-4o-mini:*"
              provider: openai
              input_mtok: 0.30
              output_mtok: 1.20
              cache_read_mtok: 0.15
            """
        )
    )
    cfg = CostConfig(overrides_file=str(y), overrides=[{"model": "inline", "input_mtok": 1, "output_mtok": 1}])
    assert [(o.model, s.label()) for o, s in cfg.all_overrides()] == [
        ("inline", "overrides entry 0"),
        ("acme-llm-7b", f"overrides_file {y} entry 0"),
        ("ft:gpt-4o-mini:*", f"overrides_file {y} entry 1"),
    ]
    j = tmp_path / "prices.json"
    j.write_text(json.dumps({"overrides": [{"model": "a", "input_mtok": 1, "output_mtok": 2}]}))
    assert [o.model for o in load_overrides_file(j)] == ["a"]
    price = PriceTable(CostConfig(overrides_file=str(y))).resolve("vllm", ["acme-llm-7b"]).price
    assert price is not None and f"overrides_file {y} entry 0" in price.source


def test_overrides_file_errors_name_file_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- {model: ok, input_mtok: 1, output_mtok: 1}\n- {model: x, input_mtok: -2, output_mtok: 1, typo: 3}\n"
    )
    with pytest.raises(ValidationError) as err:
        CostConfig(overrides_file=str(bad))
    msg = str(err.value)
    assert f"{bad}: entry 1: input_mtok" in msg and f"{bad}: entry 1: typo: unknown key" in msg
    with pytest.raises(ValidationError, match="cannot read"):
        CostConfig(overrides_file=str(tmp_path / "missing.yaml"))
    (tmp_path / "map.yaml").write_text("model: x\n")
    with pytest.raises(ValidationError, match="expected a list"):
        CostConfig(overrides_file=str(tmp_path / "map.yaml"))
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValidationError, match="not valid JSON"):
        CostConfig(overrides_file=str(tmp_path / "broken.json"))


def test_through_the_config_loader(tmp_path: Path) -> None:
    """As `tracelake validate` reports it: file, key path, what was expected."""
    Registry.register(factory)
    bad = tmp_path / "prices.yaml"
    bad.write_text("- {model: x, input_mtok: 1}\n")
    doc = {
        "processors": {
            "cost": {"overrides": [{"model": "y", "input_mtok": 1, "output_mtok": -1}]},
            "cost/b": {"overrides_file": str(bad)},
        },
        "pipelines": {"traces": {"process": ["cost", "cost/b"]}},
    }
    with pytest.raises(ConfigError) as err:
        parse(doc, "tracelake.yaml")
    text = str(err.value)
    assert "tracelake.yaml: processors.cost.overrides.0.output_mtok" in text
    assert f"processors.cost/b: {bad}: entry 0: output_mtok: Field required" in text
    ok = parse({"processors": {"cost": {}}, "pipelines": {"traces": {"process": ["cost"]}}}, "t.yaml")
    assert isinstance(factory.create(ok.processors["cost"].config, _ctx()), CostProcessor)


def _ctx():  # type: ignore[no-untyped-def]
    from core.processor import ProcessorContext

    return ProcessorContext(processor_id="cost")
