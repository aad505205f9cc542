"""redact_pii: every entity and secret kind, every place a string lives in a span, and the per-key actions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from core.conventions import CorrelationKeys, Normalizer
from core.processor import ProcessorContext
from pipeline.otlp.encode import apply_table
from processors.redact_pii import HashKeyMissing, PiiRedactor, RedactPiiConfig, factory
from processors.redact_pii.engine import find_ner_model
from processors.redact_pii.hash_key import hash_value, lookup_tokens
from processors.redact_pii.recognizers import luhn_valid
from processors.redact_pii.testing import TEST_HASH_KEY, make_batch, rows

HAS_NER_MODEL = find_ner_model(None) is not None


@pytest.fixture(autouse=True, scope="module")
def _hash_key() -> Iterator[None]:
    old = os.environ.get("TRACELAKE_HASH_KEY")
    os.environ["TRACELAKE_HASH_KEY"] = TEST_HASH_KEY
    yield
    if old is None:
        os.environ.pop("TRACELAKE_HASH_KEY", None)
    else:
        os.environ["TRACELAKE_HASH_KEY"] = old


@pytest.fixture(scope="module")
def default() -> PiiRedactor:
    """`redact_pii: {}` — NER included when the model is installed (built once: loading spaCy takes ~1 s)."""
    return PiiRedactor(RedactPiiConfig())


def redactor(**cfg: object) -> PiiRedactor:
    return PiiRedactor(RedactPiiConfig(**{"ner": "off", **cfg}))  # type: ignore[arg-type]


def one(p: PiiRedactor, attrs: dict[str, object], **span: object) -> dict:
    return rows(p.process(make_batch([{"attrs": attrs, **span}])))[0]


@pytest.mark.parametrize(
    ("entity", "text", "secret"),
    [
        ("EMAIL_ADDRESS", "write to {} today", "maria.gonzalez@example.com"),
        ("PHONE_NUMBER", "call {} after 5", "+1 (415) 555-0132"),
        ("PHONE_NUMBER", "London desk {}", "+44 20 7946 0958"),
        ("PHONE_NUMBER", "office: {}.", "(212) 555-0198"),
        ("CREDIT_CARD", "card {} exp 12/27", "4111 1111 1111 1111"),
        ("CREDIT_CARD", "amex {}", "3782 822463 10005"),
        ("US_SSN", "SSN {} on file", "536-22-8147"),
        ("IBAN_CODE", "wire to {} please", "DE89 3704 0044 0532 0130 00"),
        ("IBAN_CODE", "iban={}", "NL91ABNA0417164300"),
        ("IP_ADDRESS", "from {} via proxy", "203.0.113.42"),
        ("IP_ADDRESS", "client {}", "2001:db8:85a3::8a2e:370:7334"),
        ("CRYPTO", "send BTC to {}", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
        ("CRYPTO", "segwit {}", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"),
    ],
)
def test_structured_entities_become_typed_placeholders(entity: str, text: str, secret: str) -> None:
    p = redactor()
    row = one(p, {"note": text.format(secret)})
    assert row["attributes"]["note"] == text.format(f"<{entity}>")
    assert row["pii_found"] == {entity: 1}
    assert p.stats[entity] == 1


@pytest.mark.parametrize(
    ("entity", "text", "secret"),
    [
        ("API_KEY", "key {} rejected", "sk-proj-Tq8vL2mN4pR6sX0zB3cF5hJ7kW9yA1dE"),
        ("API_KEY", "using {}", "sk-Zq4rT8vW2xY6zB0cD3fG5hJ7kL9mN1pQ3sT5vX7zA9bC"),
        ("API_KEY", "anthropic {}", "sk-ant-api03-Xa9bC2dE4fG6hJ8kL0mN2pQ4rS6tU8vW0xY2zA4bC6dE8fG0hJ2-AbCdEfAA"),
        ("API_KEY", "aws {} configured", "AKIAIOSFODNN7EXAMPLE"),
        ("API_KEY", "pushed with {}", "ghp_R7mK2pX9vL4tQ8nB3wZ6cY1hF5jD0sA2gE4u"),
        ("API_KEY", "slack {}", "xoxb-2048123456-4096123456789-Hk3LmN8pQr2StUv5WxYz7Ab1"),
        ("BEARER_TOKEN", "Authorization: Bearer {}", "9f8Kq2LmX7vB4nT1pRz6Yc3Wd5Hs0Ja8"),
        (
            "JWT",
            "cookie session={}; theme=dark",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        ),
        (
            "PRIVATE_KEY",
            "key: {} end",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePz\n"
            "-----END RSA PRIVATE KEY-----",
        ),
        ("SECRET", "DB_PASSWORD={} then", "hunter2!"),
        ("SECRET", "api_key: {}", "7c4a8d09ca3762af61e59520943dc26494f8941b"),
        ("SECRET", "dsn postgres://app:{}@db.internal:5432/orders", "s3cr3tPass"),
    ],
)
def test_secret_kinds(entity: str, text: str, secret: str) -> None:
    row = one(redactor(), {"log.message": text.format(secret)})
    assert row["attributes"]["log.message"] == text.format(f"<{entity}>")
    assert row["pii_found"] == {entity: 1}


def test_luhn_agrees_with_the_textbook_checksum() -> None:
    def textbook(digits: str) -> bool:
        total = 0
        for i, c in enumerate(reversed(digits)):
            d = int(c) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    numbers = [str(n) for n in range(0, 100_000, 7)] + [str(4_000_000_000_000_000 + 7919 * n) for n in range(3000)]
    numbers += ["4111111111111111", "5555555555554444", "378282246310005", "4111111111111112", "0000000000000000"]
    assert [luhn_valid(n) for n in numbers] == [textbook(n) for n in numbers]
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_lookalikes_survive() -> None:
    text = (
        "ORD-2024-118833 SKU-44120-BLK-XL $1,299.00 2024-08-06 v3.11.7 build 4.2.0.1 trace "
        "4bf92f3577b34da6a3ce929d0e0e4736 sha 9fceb02d0ae598e95dc970b74767f19372d61af8 epoch 1718031234567 "
        "gpt-4o-2024-08-06 max_tokens: 1024 password reset link 4111 1111 1111 1112 lodash@4.17.21 a::b "
        "sk-learn-compatible-estimator api_key=${OPENAI_API_KEY} order #4155550132"
    )
    row = one(redactor(), {"note": text, "gen_ai.response.model": "gpt-4o-2024-08-06"})
    assert row["attributes"]["note"] == text
    assert row["pii_found"] == {}


def test_json_messages_stay_valid_json(default: PiiRedactor) -> None:
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "I'm at maria@example.com,\n+1 (415) 555-0132 — “card” 4111111111111111"}
            ],
        },
    ]
    tool_args = {"email": "bob@example.org", "card": 4111111111111111, "qty": 2, "password": "Tr0ub4dor&3"}
    for value in (json.dumps(messages), json.dumps(messages, ensure_ascii=False, separators=(",", ":"))):
        attrs = {"gen_ai.input.messages": value, "gen_ai.tool.call.arguments": json.dumps(tool_args), "x.raw": value}
        row = one(default, attrs)
        for key in ("gen_ai.input.messages", "x.raw"):
            doc = json.loads(row["attributes"][key])  # valid JSON, same shape, keys untouched
            assert [m["role"] for m in doc] == ["system", "user"] and doc[0] == messages[0]
        msg = json.loads(row["attributes"]["gen_ai.input.messages"])[1]["parts"][0]["content"]
        assert msg == "I'm at <EMAIL_ADDRESS>,\n<PHONE_NUMBER> — “card” <CREDIT_CARD>"
        # a key without NER takes the in-place path: same result, original formatting kept
        raw = json.loads(row["attributes"]["x.raw"])[1]["parts"][0]["content"]
        assert raw == msg
        assert row["attributes"]["x.raw"] == value.replace("maria@example.com", "<EMAIL_ADDRESS>").replace(
            "+1 (415) 555-0132", "<PHONE_NUMBER>"
        ).replace("4111111111111111", "<CREDIT_CARD>")
        args = json.loads(row["attributes"]["gen_ai.tool.call.arguments"])
        assert args == {"email": "<EMAIL_ADDRESS>", "card": "<CREDIT_CARD>", "qty": 2, "password": "<SECRET>"}


def test_json_escapes_before_entities() -> None:
    """In raw JSON `\\nsk-…` and `\\u201c+61…` must still be found (the escape is no word boundary)."""
    content = (
        "Saved.\n“+61 2 9374 4000”\tkeys:\nsk-Zq4rT8vW2xY6zB0cD3fG5hJ7kL9mN1pQ3sT5vX7zA9bC\n“nadia@example.com”"
        "\n4111 1111 1111 1111\n536-22-8147\t“(212) 555-0198”"
    )
    value = json.dumps([{"role": "assistant", "content": content}])  # ensure_ascii: “ becomes \u201c
    row = one(redactor(), {"app.transcript": value})
    assert json.loads(row["attributes"]["app.transcript"])[0]["content"] == (
        "Saved.\n“<PHONE_NUMBER>”\tkeys:\n<API_KEY>\n“<EMAIL_ADDRESS>”\n<CREDIT_CARD>\n<US_SSN>\t“<PHONE_NUMBER>”"
    )


def test_allow_values() -> None:
    p = redactor(allow_values=["Support@Acme.example.com"])
    row = one(p, {"prompt": "Escalate to support@acme.example.com or jane@example.com"})
    assert row["attributes"]["prompt"] == "Escalate to support@acme.example.com or <EMAIL_ADDRESS>"
    assert row["pii_found"] == {"EMAIL_ADDRESS": 1}


def test_include_and_exclude_globs() -> None:
    email = "jane@example.com"
    p = redactor(include_keys=["app.*", "status_message"], exclude_keys=["app.debug.*"])
    row = one(p, {"app.note": email, "app.debug.raw": email, "other": email}, error=f"failed for {email}")
    assert row["attributes"] == {"app.note": "<EMAIL_ADDRESS>", "app.debug.raw": email, "other": email}
    assert row["status_message"] == "failed for <EMAIL_ADDRESS>"


def test_hash_is_joinable_and_lands_in_user_id() -> None:
    keys = CorrelationKeys(user=("user.id", "enduser.id", "app.user"))
    p = PiiRedactor(
        RedactPiiConfig(ner="off"), ProcessorContext(processor_id="redact_pii", normalizer=Normalizer(keys))
    )
    batch = make_batch(
        [{"attrs": {"user.id": "alice@example.com"}}, {"attrs": {"app.user": "bob"}}, {"attrs": {}}],
        resource={"enduser.id": "carol"},
        keys=keys,
    )
    out = rows(p.process(batch))
    alice = hash_value(TEST_HASH_KEY.encode(), "alice@example.com")
    bob = hash_value(TEST_HASH_KEY.encode(), "bob")
    carol = hash_value(TEST_HASH_KEY.encode(), "carol")
    assert [r["user_id"] for r in out] == [alice, bob, carol]
    assert out[0]["attributes"]["user.id"] == alice and out[1]["attributes"]["app.user"] == bob
    assert out[2]["resource_attributes"]["enduser.id"] == carol
    assert out[0]["pii_found"] == {}  # a hashed id is policy, not a finding
    # same id, next batch, another processor instance: same token
    again = rows(
        PiiRedactor(RedactPiiConfig(ner="off")).process(make_batch([{"attrs": {"user.id": "alice@example.com"}}]))
    )
    assert again[0]["user_id"] == alice
    assert alice.startswith("hmac:") and len(alice) == 37
    assert alice != hash_value(b"another-key-0123456789", "alice@example.com")


def test_hash_key_must_be_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRACELAKE_HASH_KEY")
    with pytest.raises(HashKeyMissing, match="TRACELAKE_HASH_KEY"):
        PiiRedactor(RedactPiiConfig(ner="off"))
    monkeypatch.setenv("TRACELAKE_HASH_KEY", "short")
    with pytest.raises(HashKeyMissing, match="shorter than 16 bytes"):
        PiiRedactor(RedactPiiConfig(ner="off"))
    monkeypatch.delenv("TRACELAKE_HASH_KEY")
    key_file = tmp_path / "hash_key"
    key_file.write_text("file-key-0123456789abcdef\n")
    p = PiiRedactor(RedactPiiConfig(ner="off", hash_key_file=str(key_file)))
    assert one(p, {"user.id": "u1"})["user_id"] == hash_value(b"file-key-0123456789abcdef", "u1")
    # a missing file is created once with a random key, private to this user, and reused
    created = tmp_path / "state" / "hash.key"
    first = PiiRedactor(RedactPiiConfig(ner="off", hash_key_file=str(created), create_hash_key_file=True))
    assert created.stat().st_mode & 0o777 == 0o600 and len(created.read_text().strip()) == 64
    second = PiiRedactor(RedactPiiConfig(ner="off", hash_key_file=str(created), create_hash_key_file=True))
    assert one(first, {"user.id": "u1"})["user_id"] == one(second, {"user.id": "u1"})["user_id"]
    with pytest.raises(HashKeyMissing, match="cannot read"):
        PiiRedactor(RedactPiiConfig(ner="off", hash_key_file=str(tmp_path / "absent.key")))
    # no hash action anywhere: no key needed
    PiiRedactor(RedactPiiConfig(ner="off", key_actions={"user.id": "redact", "enduser.id": "redact"}))


def test_drop_and_mask() -> None:
    p = redactor(key_actions={"http.request.header.*": "drop", "payment.*": "mask"}, mask_keep_last=4)
    row = one(
        p,
        {
            "http.request.header.cookie": "session=abc",
            "payment.note": "card 4111 1111 1111 1111 ok",
            "keep": "x",
        },
    )
    assert row["attributes"] == {"payment.note": "card ***************1111 ok", "keep": "x"}
    assert row["pii_found"] == {"CREDIT_CARD": 1}
    assert p.counters["dropped"] == 1


def test_drop_status_message_and_typed_copies() -> None:
    """Typed columns are copies of attributes: they follow the redaction (no raw value left in session_id)."""
    p = redactor(key_actions={"status_message": "drop"})
    row = one(p, {"session.id": "jane@example.com", "gen_ai.request.model": "gpt-4o"}, error="boom")
    assert row["status_message"] is None
    assert row["session_id"] == "<EMAIL_ADDRESS>" and row["request_model"] == "gpt-4o"


def test_pii_found_counts_and_stats() -> None:
    p = redactor()
    batch = make_batch(
        [
            {"attrs": {"a": "a@example.com b@example.com", "b": "c@example.com +1 (415) 555-0132"}},
            {"attrs": {"a": "nothing here"}},
            {"attrs": {"ip": "10.0.0.1"}, "error": "from 10.0.0.2"},
        ]
    )
    out = rows(p.process(batch))
    assert [r["pii_found"] for r in out] == [{"EMAIL_ADDRESS": 3, "PHONE_NUMBER": 1}, {}, {"IP_ADDRESS": 2}]
    assert p.stats["EMAIL_ADDRESS"] == 3 and p.stats["PHONE_NUMBER"] == 1 and p.stats["IP_ADDRESS"] == 2
    assert out[2]["attributes"]["ip"] == "<IP_ADDRESS>"


def test_events_links_status_and_resource() -> None:
    p = redactor()
    batch = make_batch(
        [
            {
                "attrs": {"ok": "fine"},
                "error": "SMTP refused kwame@example.com",
                "events": [
                    ("exception", {"exception.message": "auth failed for sk-proj-Tq8vL2mN4pR6sX0zB3cF5hJ7kW9yA1dE"}),
                    ("log", {"msg": "no pii"}),
                    ("exception", {"exception.stacktrace": 'File "x.py"\n  password=hunter22\nat 10.24.3.17'}),
                ],
                "links": [{"peer": "203.0.113.9"}, {}],
            },
            {"attrs": {}, "events": [("retry", {"to": "ops@example.org"})]},
        ],
        resource={"host.ip": "198.51.100.7", "owner": "team-a@example.com"},
    )
    out = rows(p.process(batch))
    first = out[0]
    assert first["status_message"] == "SMTP refused <EMAIL_ADDRESS>"
    assert first["events"] == [
        ("exception", {"exception.message": "auth failed for <API_KEY>"}),
        ("log", {"msg": "no pii"}),
        ("exception", {"exception.stacktrace": 'File "x.py"\n  password=<SECRET>\nat <IP_ADDRESS>'}),
    ]
    assert first["links"] == [{"peer": "<IP_ADDRESS>"}, {}]
    assert first["resource_attributes"]["host.ip"] == "<IP_ADDRESS>"
    assert first["resource_attributes"]["owner"] == "<EMAIL_ADDRESS>"
    assert out[1]["events"] == [("retry", {"to": "<EMAIL_ADDRESS>"})]
    assert first["pii_found"] == {"API_KEY": 1, "EMAIL_ADDRESS": 2, "IP_ADDRESS": 3, "SECRET": 1}
    assert out[1]["pii_found"] == {"EMAIL_ADDRESS": 2, "IP_ADDRESS": 1}


def test_cache_hits_give_the_same_result() -> None:
    p = redactor()
    spans = [
        {"attrs": {"gen_ai.system_instructions": "Reply to help@example.com, ref 2024-08-06", "n": str(i)}}
        for i in range(5)
    ]
    first = rows(p.process(make_batch(spans)))
    assert p.counters["cache_misses"] == 1 and p.counters["cache_hits"] == 4  # in-batch repeats
    second = rows(p.process(make_batch(spans)))
    assert p.counters["cache_misses"] == 1 and p.counters["cache_hits"] == 9
    assert first == second and first[0]["attributes"]["gen_ai.system_instructions"].startswith("Reply to <EMAIL")
    uncached = redactor(cache_size=0)
    assert rows(uncached.process(make_batch(spans))) == first and uncached.counters["cache_hits"] == 0


def test_batches_with_chunks_slices_and_no_rows() -> None:
    p = redactor()
    one_batch = make_batch([{"attrs": {"a": "x@example.com"}, "events": [("e", {"b": "y@example.com"})]}] * 3)
    table = pa.concat_tables([one_batch.slice(1, 2), one_batch.slice(0, 1)])
    out = rows(p.process(table))
    assert [r["attributes"]["a"] for r in out] == ["<EMAIL_ADDRESS>"] * 3
    assert [r["events"] for r in out] == [[("e", {"b": "<EMAIL_ADDRESS>"})]] * 3
    empty = one_batch.slice(0, 0)
    assert p.process(empty).num_rows == 0


def test_output_folds_back_into_otlp_for_the_ingest_stage() -> None:
    """The ingest chain re-encodes the processed table into the request: changed and dropped values survive."""
    from tests.conftest import make_request

    req = make_request(
        [{"trace_id": "ab" * 16, "span_id": "01" * 8, "attrs": {"a": "x@example.com", "drop.me": "y", "n": 7}}]
    )
    from core.conventions import normalize
    from pipeline.otlp.decode import SourcedRequest, decode

    table = normalize(decode([SourcedRequest(req, "ingest")]))
    out = apply_table(req, redactor(key_actions={"drop.*": "drop"}).process(table))
    attrs = {kv.key: kv.value for kv in out.resource_spans[0].scope_spans[0].spans[0].attributes}
    assert attrs["a"].string_value == "<EMAIL_ADDRESS>" and "drop.me" not in attrs and attrs["n"].int_value == 7


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        RedactPiiConfig(entitys=["EMAIL_ADDRESS"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown entity types"):
        RedactPiiConfig(entities=["EMAIL"])
    with pytest.raises(ValidationError):
        RedactPiiConfig(key_actions={"user.id": "encrypt"})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="placeholder"):
        RedactPiiConfig(placeholder="<{type}>")
    assert factory.type == "redact_pii" and factory.config_class is RedactPiiConfig and not factory.stateful
    # YAML 1.1 turns a bare `ner: off` into false
    assert RedactPiiConfig.model_validate({"ner": False}).ner == "off"
    assert RedactPiiConfig.model_validate({"ner": True}).ner == "on"


def test_factory_creates_with_context() -> None:
    ctx = ProcessorContext(processor_id="redact_pii/ingest", stage="ingest")
    p = factory.create(factory.config_class.model_validate({"ner": "off", "entities": ["EMAIL_ADDRESS"]}), ctx)
    row = one(p, {"a": "x@example.com 4111 1111 1111 1111 sk-proj-Tq8vL2mN4pR6sX0zB3cF5hJ7kW9yA1dE"})
    assert row["attributes"]["a"] == "<EMAIL_ADDRESS> 4111 1111 1111 1111 <API_KEY>"  # secrets: true by default


def test_presidio_detector_path() -> None:
    p = redactor(detector="presidio")
    row = one(
        p, {"a": "mail x@example.com card 4111 1111 1111 1111", "m": json.dumps([{"c": "call +44 20 7946 0958"}])}
    )
    assert row["attributes"]["a"] == "mail <EMAIL_ADDRESS> card <CREDIT_CARD>"
    assert json.loads(row["attributes"]["m"]) == [{"c": "call <PHONE_NUMBER>"}]


@pytest.mark.skipif(not HAS_NER_MODEL, reason="no spaCy model package installed")
def test_ner_finds_people_and_places(default: PiiRedactor) -> None:
    text = "Hi, I'm Maria Gonzalez from Lagos. Aisha Okafor will call you. Ticket R-5521."
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])
    row = one(default, {"gen_ai.input.messages": messages, "not.free.text": text})
    content = json.loads(row["attributes"]["gen_ai.input.messages"])[0]["parts"][0]["content"]
    assert content == "Hi, I'm <PERSON> from <LOCATION>. <PERSON> will call you. Ticket R-5521."
    assert row["attributes"]["not.free.text"] == text  # NER reads only ner_keys
    assert row["pii_found"] == {"PERSON": 2, "LOCATION": 1}


@pytest.mark.skipif(not HAS_NER_MODEL, reason="no spaCy model package installed")
def test_ner_max_chars_bounds_what_ner_reads() -> None:
    p = PiiRedactor(RedactPiiConfig(ner="on", ner_max_chars=40))
    text = "Maria Gonzalez wrote this. " + "Nothing to see here. " * 5 + "Aisha Okafor replied."
    row = one(p, {"input.value": text})
    assert row["attributes"]["input.value"].startswith("<PERSON> wrote this.")
    assert row["attributes"]["input.value"].endswith("Aisha Okafor replied.")
    assert 0 < p.counters["ner_chars"] <= 40


def test_ner_on_without_model_fails_at_build() -> None:
    with pytest.raises(RuntimeError, match="no spaCy model"):
        PiiRedactor(RedactPiiConfig(ner="on", ner_model="no_such_spacy_model_pkg"))
    assert PiiRedactor(RedactPiiConfig(ner="auto", ner_model="no_such_spacy_model_pkg")).ner_model is None


def test_allow_list_exact_and_regex() -> None:
    p = redactor(allow_list=["Support@Acme.example.com"], allow_list_regex=[r"@partner\.example\.org$", r"^10\."])
    row = one(
        p,
        {
            "prompt": "Escalate to support@acme.example.com, ops@partner.example.org or jane@example.com",
            "client.address": "10.0.0.7",
            "peer": "192.0.2.1",
        },
    )
    assert row["attributes"]["prompt"] == (
        "Escalate to support@acme.example.com, ops@partner.example.org or <EMAIL_ADDRESS>"
    )
    assert row["attributes"]["client.address"] == "10.0.0.7" and row["attributes"]["peer"] == "<IP_ADDRESS>"
    assert row["pii_found"] == {"EMAIL_ADDRESS": 1, "IP_ADDRESS": 1}
    # the old key name still works
    assert RedactPiiConfig.model_validate({"allow_values": ["x@example.com"]}).allow_list == ["x@example.com"]


def test_deny_list_terms_and_regexes_with_entities_of_your_own() -> None:
    p = redactor(
        deny_list={"PROJECT": ["Bluebird", "Dr. Evil"], "PERSON": ["Mx Quill"]},
        deny_list_regex={"TICKET": [r"INC-\d{6}"]},
    )
    text = "bluebird launch moved; Dr. Evil and mx quill own INC-123456 (not INC-12 or Bluebirds)."
    row = one(p, {"note": text, "gen_ai.input.messages": json.dumps([{"content": "Bluebird, INC-654321"}])})
    assert row["attributes"]["note"] == (
        "<PROJECT> launch moved; <PROJECT> and <PERSON> own <TICKET> (not INC-12 or Bluebirds)."
    )
    assert json.loads(row["attributes"]["gen_ai.input.messages"]) == [{"content": "<PROJECT>, <TICKET>"}]
    assert row["pii_found"] == {"PERSON": 1, "PROJECT": 3, "TICKET": 2}
    assert p.stats["PROJECT"] == 3 and p.stats["TICKET"] == 2
    # Presidio's own deny-list recognizers on the presidio detector path
    presidio = redactor(detector="presidio", deny_list={"PROJECT": ["Bluebird"]}, allow_list=["x@example.com"])
    row = one(presidio, {"note": "Bluebird status to x@example.com and y@example.com"})
    assert row["attributes"]["note"] == "<PROJECT> status to x@example.com and <EMAIL_ADDRESS>"


def test_allow_and_deny_config_errors() -> None:
    with pytest.raises(ValidationError, match="not RE2 syntax"):
        RedactPiiConfig(deny_list_regex={"TICKET": [r"(?<=#)\d+"]})
    with pytest.raises(ValidationError, match="invalid regex"):
        RedactPiiConfig(allow_list_regex=["(unclosed"])
    with pytest.raises(ValidationError, match="upper case"):
        RedactPiiConfig(deny_list={"project": ["x"]})


def test_hash_once_whatever_the_chain() -> None:
    """conf/tracelake.yaml hashes in the receiver and again in the worker: the id is hashed once."""
    token = hash_value(TEST_HASH_KEY.encode(), "alice@example.com")
    assert hash_value(TEST_HASH_KEY.encode(), token) == token
    ingest, worker = redactor(), redactor()
    batch = make_batch([{"attrs": {"user.id": "alice@example.com", "note": "mail bob@example.com"}}])
    once = ingest.process(batch)
    twice = rows(worker.process(once))[0]
    assert twice["user_id"] == token and twice["attributes"]["user.id"] == token
    assert twice["attributes"]["note"] == "mail <EMAIL_ADDRESS>" and twice["pii_found"] == {"EMAIL_ADDRESS": 1}
    assert worker.counters["hashed"] == 0
    # what forget looks for: the token, and the forms lakes written before tokens carried their form hold
    forms = lookup_tokens(TEST_HASH_KEY.encode(), "alice@example.com")
    assert forms[0] == token and len(forms[1]) == 32 and forms[2] == hmac_hex(forms[1])


def hmac_hex(value: str) -> str:
    import hashlib
    import hmac

    return hmac.new(TEST_HASH_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


@pytest.mark.skipif(not HAS_NER_MODEL, reason="no spaCy model package installed")
def test_ner_logs_no_presidio_warnings(default: PiiRedactor, caplog: pytest.LogCaptureFixture) -> None:
    """spaCy labels PERCENT, MONEY, QUANTITY, ORDINAL…: Presidio warned once per text for each unmapped one."""
    text = "Yesterday Maria Gonzalez paid $129.99, 50% of the first 3 kg order on the 2nd of March in Paris."
    with caplog.at_level(logging.INFO):
        row = one(default, {"input.value": text})
    assert "<PERSON>" in row["attributes"]["input.value"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("presidio")] == []


def test_long_clean_values_skip_the_re2_pass_once_seen() -> None:
    p = redactor()
    prompt = "You are a helpful assistant for Acme. Answer briefly and politely. " * 30  # > 1 KiB, no candidate
    leaky = prompt + " Escalations go to ops@example.com."
    first = rows(p.process(make_batch([{"attrs": {"gen_ai.system_instructions": v}} for v in (prompt, leaky) * 2])))
    assert p.counters["known_clean"] == 0 and first[2]["attributes"]["gen_ai.system_instructions"] == prompt
    assert first[3]["attributes"]["gen_ai.system_instructions"].endswith("go to <EMAIL_ADDRESS>.")  # a repeat
    second = rows(p.process(make_batch([{"attrs": {"gen_ai.system_instructions": v}} for v in (prompt, leaky)])))
    assert p.counters["known_clean"] == 1  # the same prompt again; the changed one is scanned
    assert second[0]["attributes"]["gen_ai.system_instructions"] == prompt
    assert second[1]["attributes"]["gen_ai.system_instructions"].endswith("go to <EMAIL_ADDRESS>.")


def test_values_holding_marker_characters_are_scanned_in_python() -> None:
    """The RE2 pass marks candidates with private-use characters; a value that has them already is not split."""
    text = "odd \ue000 bytes \ue002 from a@example.com and 4111 1111 1111 1111"
    row = one(redactor(), {"note": text})
    assert row["attributes"]["note"] == "odd \ue000 bytes \ue002 from <EMAIL_ADDRESS> and <CREDIT_CARD>"
