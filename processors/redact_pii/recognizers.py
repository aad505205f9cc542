"""What redact_pii looks for, written once and run two ways: RE2 over whole columns, Python on the hits.

Every pattern here is in the common subset of RE2 (pyarrow.compute) and Python `re` with re.ASCII, so the
same text drives:
- `Scanner.match_column` – one RE2 match of the combined pattern over a whole column (no captures, so RE2
  stays on its DFA): which values hold any candidate. Values without one never reach Python.
- `Scanner.mark_column` + `parse_marked` – one RE2 replace over the flagged values wraps each candidate in
  private-use marker characters (whole-match rewrite); Python splits at the markers and finds each candidate's
  kind by matching the per-kind patterns at its position (RE2 alternation is leftmost-first, like Python's).
- `Scanner.scan_text` – the combined pattern compiled by Python `re`, for the few texts the RE2 pass cannot
  take (texts that already contain a marker character, decoded JSON leaves).

A candidate is only a candidate. `Validators` decides, on the matched substring only, with the checks
Presidio's own recognizers use (Luhn for cards, IBAN mod-97 and per-country format, SSN invalid ranges,
base58check/bech32 for bitcoin addresses, `ipaddress` for IPs, the public suffix list for email domains,
libphonenumber for phones), plus a little context that Presidio's no-op NLP engine cannot give it (an id
prefix such as `ORD-` before a number makes it an id, not a phone). Secrets are high-confidence shapes
with an entropy check on the token part.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from presidio_analyzer.predefined_recognizers.generic import iban_patterns

from processors.redact_pii import engine as _engine  # sets the tldextract env var before anything imports it
from processors.redact_pii.allow_deny import DenyList

# -- entity types -------------------------------------------------------------------------------------
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
US_SSN = "US_SSN"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
CRYPTO = "CRYPTO"
PERSON = "PERSON"
LOCATION = "LOCATION"
API_KEY = "API_KEY"
BEARER_TOKEN = "BEARER_TOKEN"
JWT = "JWT"
PRIVATE_KEY = "PRIVATE_KEY"
SECRET = "SECRET"

STRUCTURED_ENTITIES = (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, US_SSN, IBAN_CODE, IP_ADDRESS, CRYPTO)
NER_ENTITIES = (PERSON, LOCATION)
SECRET_ENTITIES = (API_KEY, BEARER_TOKEN, JWT, PRIVATE_KEY, SECRET)
ALL_ENTITIES = STRUCTURED_ENTITIES + NER_ENTITIES + SECRET_ENTITIES

# Marker characters (Unicode private use area) that the RE2 pass puts around each candidate.
OPEN, CLOSE = "\ue000", "\ue002"
DENY = "DENY"  # the kind of allow/deny config's deny_list terms

# A word boundary, or the end of a JSON escape: in the raw text of a JSON value `\nsk-…` or
# `\u201c415-555-0132` must still start a candidate, and blanking escapes first would cost a copy of every
# value. The escape becomes part of the match and is cut off again in Python (`_cut_escape`).
_B = r"(?:\b|\\[nrtbf]|\\u[0-9A-Fa-f]{4})"

# -- secrets --------------------------------------------------------------------------------------------
# (entity, pattern). A group named `v` marks the part that is replaced ("Bearer <BEARER_TOKEN>"); without
# it the whole match is. Order matters: the first pattern that fully matches a candidate names it.
_TOKEN = r"[A-Za-z0-9_\-]"
SECRET_KEY_NAMES = (
    r"(?:password|passwd|passphrase|pwd|secret|secret[_\-]?key|api[_\-]?key|apikey|access[_\-]?key"
    r"|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|client[_\-]?secret|private[_\-]?key|token"
    r"|credentials?|session[_\-]?secret|x[_\-]api[_\-]key)"
)
SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        PRIVATE_KEY,
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY"
        r"(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)",
    ),
    (BEARER_TOKEN, r"(?i:bearer|basic)\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)"),
    (JWT, _B + r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),
    (API_KEY, _B + r"sk-" + _TOKEN + "{20,}"),  # OpenAI sk-…, sk-proj-…, Anthropic sk-ant-…
    (API_KEY, _B + r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),  # AWS access key ids
    (API_KEY, _B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),  # GitHub
    (API_KEY, _B + r"xox[abposr]-[A-Za-z0-9\-]{10,}"),  # Slack
    (API_KEY, _B + r"AIza[0-9A-Za-z_\-]{35}"),  # Google
    (API_KEY, _B + r"[sr]k_(?:live|test)_[0-9A-Za-z]{16,}"),  # Stripe
    # credentials in a URL: scheme://user:password@host
    (SECRET, _B + r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"'<>\\]*:(?P<v>[^\s:/@\"'<>\\]+)@"),
    # password=…, "api_key": "…", OPENAI_API_KEY: … (the name may carry prefixes: db_password, aws_secret_access_key)
    (
        SECRET,
        r"(?i:" + _B + r"(?:[A-Za-z0-9]+[_.\-])*" + SECRET_KEY_NAMES + r")(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
        r"(?P<v>[^\s\"',;<>\\]{3,})",
    ),
)

# -- structured kinds ------------------------------------------------------------------------------------
# IBANs only of the countries Presidio validates (its per-country formats): `JD173234936181` (a parcel
# tracking number) is then no candidate at all
_IBAN_COUNTRIES = "(?:" + "|".join(sorted(iban_patterns.regex_per_country)) + ")"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_H = r"[0-9A-Fa-f]{1,4}"
STRUCTURED_PATTERNS: dict[str, str] = {
    EMAIL_ADDRESS: _B + r"[A-Za-z0-9%+\-_](?:[A-Za-z0-9.%+\-_]*[A-Za-z0-9%+\-_])?@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
    r"\.[A-Za-z][A-Za-z0-9\-]*[A-Za-z]\b",
    IBAN_CODE: _B + _IBAN_COUNTRIES + r"\d{2}(?:[ \-]?[A-Z0-9]{4}){2,7}(?:[ \-]?[A-Z0-9]{1,3})?\b",
    US_SSN: _B + r"(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}|\d{3}\.\d{2}\.\d{4})\b",
    CREDIT_CARD: _B
    + r"(?:4\d{3}|5[0-5]\d{2}|2[2-7]\d{2}|6\d{3}|1\d{3}|3\d{3})[ \-]?\d{3,4}[ \-]?\d{3,4}[ \-]?\d{3,5}\b",
    "IPV4": _B + _OCTET + r"(?:\." + _OCTET + r"){3}(?:/\d{1,2})?\b",
    "IPV6": _B + r"(?:(?:" + _H + r":){7}" + _H + r"|(?:" + _H + r":){1,6}(?::" + _H + r"){1,6})\b",
    CRYPTO: _B + r"(?:bc1[02-9ac-hj-np-z]{11,}|[13][1-9A-HJ-NP-Za-km-z]{25,})\b",
    PHONE_NUMBER: r"(?:\+\d{1,3}[ .\-]?(?:\(\d{1,5}\)|\d{1,5})(?:[ .\-]?\d{1,5}){1,5}"
    r"|\(\d{2,5}\)[ .\-]?\d{2,5}(?:[ .\-]?\d{2,5}){0,3}"
    # three or more groups; a first group of 4-5 digits needs a long second group or a fourth group, so that
    # ISO dates (2024-08-06, in every dated model name) are not candidates
    r"|" + _B + r"\d{2,3}(?:[ .\-]\d{2,5}){2,5}\b"
    r"|" + _B + r"\d{4,5}[ .\-](?:\d{3,5}(?:[ .\-]\d{2,5}){1,4}|\d{2}[ .\-]\d{3,5}(?:[ .\-]\d{2,5}){0,3}"
    r"|\d{2}[ .\-]\d{2}(?:[ .\-]\d{2,5}){1,3})\b"
    r"|" + _B + r"0\d{1,4}[ .\-/]\d{4,8}\b"
    r"|" + _B + r"\d{10,12}\b)",
}
# A value that is exactly one IPv4 address: replaced in bulk, without the per-value Python path.
WHOLE_IPV4 = r"^\s*" + _OCTET + r"(?:\." + _OCTET + r"){3}\s*$"
# Which entity each kind reports; IPV4/IPV6 are one entity with two shapes.
KIND_ENTITY = {"IPV4": IP_ADDRESS, "IPV6": IP_ADDRESS}
# RE2 leftmost-first: at one position the first kind that matches claims the text. Deny-list terms before
# everything (the user said so), then secrets; digit shapes from the most specific (IBAN, SSN, card) to the
# least (phone).
KIND_ORDER = (DENY, "SECRET", EMAIL_ADDRESS, IBAN_CODE, US_SSN, CREDIT_CARD, "IPV4", "IPV6", CRYPTO, PHONE_NUMBER)
# Digit shapes that fail their own validation get a second chance as a phone number (Presidio reports
# 078-05-1120, an invalid SSN, as a phone too).
_PHONE_FALLBACK = {US_SSN, CREDIT_CARD, "IPV4"}

_PHONE_CONTEXT = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|sms|text me|whatsapp|fax|reach|contact)")
_DATE_LIKE = re.compile(r"^(?:\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./ ]\d{1,2}[-./ ]\d{2,4})$")
_ID_PREFIX = re.compile(r"(?:[A-Za-z0-9_][\-_/]|[A-Za-z_])$")
# the tail of a larger number ("$1,299.00 2024-08-06" must not yield a phone starting at 299)
_NUMBER_PREFIX = re.compile(r"\d[,.]$")
# dots mixed with spaces or dashes: a price or version next to a date, not one phone number
_MIXED_DOTS = re.compile(r"\d\.\d.*[ \-]\d|\d[ \-]\d.*\d\.\d")
_VERSION_PREFIX = re.compile(r"(?i)(?:version|ver|v|build|release|==)\s*[:=]?\s*$")
_PLACEHOLDER_VALUE = re.compile(
    r"(?i)^(?:[<$%{*\[(].*|x+|\.+|null|none|nil|true|false|undefined|redacted|changeme|\*+)$"
)
_SECRET_KEY_RE = re.compile(r"(?i)(?:^|[._\-])" + SECRET_KEY_NAMES + r"$")


def strip_named_groups(pattern: str) -> str:
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


def is_secret_key(key: str) -> bool:
    """An attribute or JSON key whose whole value is a secret: `password`, `db.password`, `x-api-key`."""
    return bool(_SECRET_KEY_RE.search(key))


# -- validation -----------------------------------------------------------------------------------------
class Finding(NamedTuple):
    start: int
    end: int
    entity: str


class Validators:
    """Decide whether a candidate is the entity its shape suggests; bounded caches for the slow checks."""

    def __init__(self, phone_regions: Iterable[str] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")) -> None:
        import phonenumbers
        from presidio_analyzer.predefined_recognizers import (
            CryptoRecognizer,
            IbanRecognizer,
            UsSsnRecognizer,
        )

        self._phonenumbers = phonenumbers
        self.regions = tuple(phone_regions)
        self._tld = _engine.offline_tldextract()
        self._iban = IbanRecognizer()
        self._ssn = UsSsnRecognizer()
        self._crypto = CryptoRecognizer()
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._secret_res = [(entity, re.compile(p, re.ASCII)) for entity, p in SECRET_PATTERNS]

    def _cached(self, kind: str, text: str, fn: Callable[[str], Any]) -> Any:
        key = (kind, text)
        hit = self._cache.get(key, self)
        if hit is not self:
            return hit
        value = fn(text)
        self._cache[key] = value
        if len(self._cache) > 20000:
            self._cache.popitem(last=False)
        return value

    # each check returns the findings for one candidate (text[start:end]) of one kind
    def check(self, kind: str, text: str, start: int, end: int) -> list[Finding]:
        cand = text[start:end]
        if kind == "SECRET":
            return self._secret(cand, start)
        if kind == EMAIL_ADDRESS:
            ok = self._cached(kind, cand.rsplit("@", 1)[1].lower(), self._email_domain)
            return [Finding(start, end, EMAIL_ADDRESS)] if ok else []
        if kind == IBAN_CODE:
            cut = self._cached(kind, cand, self._iban_cut)
            return [Finding(start, start + cut, IBAN_CODE)] if cut else []
        if kind == CRYPTO:
            if len(cand) > (90 if cand.startswith("bc1") else 35):  # bounded here, not in the pattern (RE2 state count)
                return []
            return [Finding(start, end, CRYPTO)] if self._cached(kind, cand, self._crypto.validate_result) else []
        found: list[Finding] = []
        if kind == US_SSN:
            if not _ID_PREFIX.search(_before(text, start, 2)) and not self._ssn.invalidate_result(cand):
                found = [Finding(start, end, US_SSN)]
        elif kind == CREDIT_CARD:
            if self._card_ok(cand) and not _ID_PREFIX.search(_before(text, start, 2)):
                found = [Finding(start, end, CREDIT_CARD)]
        elif kind in ("IPV4", "IPV6"):
            if self._ip_ok(kind, text, start, end):
                found = [Finding(start, end, IP_ADDRESS)]
        elif kind == PHONE_NUMBER:
            phone_end = self._phone_end(text, start, end)
            return [Finding(start, phone_end, PHONE_NUMBER)] if phone_end else []
        # the whole candidate or nothing: a failed card number must not leave a "phone" prefix behind
        if not found and kind in _PHONE_FALLBACK and self._phone_end(text, start, end, trim=False):
            found = [Finding(start, end, PHONE_NUMBER)]
        return found

    def _secret(self, cand: str, start: int) -> list[Finding]:
        for entity, regex in self._secret_res:
            m = regex.match(cand)
            if m is None or m.end() != len(cand):
                continue
            if "v" in regex.groupindex:
                s, e = m.span("v")
                value = cand[s:e]
                if _PLACEHOLDER_VALUE.match(value):
                    return []
                if entity == BEARER_TOKEN and not _mixed(value, 2):
                    return []
                return [Finding(start + s, start + e, entity)]
            if entity == API_KEY and cand.startswith("sk-") and not _mixed(cand[3:], 2):
                return []
            return [Finding(start, start + len(cand), entity)]
        return []

    def _email_domain(self, domain: str) -> bool:
        return bool(self._tld(domain).suffix) and "." in domain

    def _iban_cut(self, cand: str) -> int:
        """Length of the longest prefix (ending on a group boundary) that is a valid IBAN, 0 if none.
        A greedy match may run into the next word ("DE89 3704 0044 0532 0130 00 AB12"); Presidio does the
        same walk over its regex groups."""
        ends = [i for i in range(len(cand), 14, -1) if i == len(cand) or cand[i] in " -"]
        compact_ends = [i for i in range(len(cand), 14, -1) if cand[i - 1] not in " -"]
        for end in sorted(set(ends) | set(compact_ends), reverse=True):
            piece = cand[:end].rstrip(" -")
            if self._iban.validate_result(piece):
                return len(piece)
        return 0

    def _card_ok(self, cand: str) -> bool:
        digits = cand.translate(_NO_SEPARATORS)
        if not 13 <= len(digits) <= 19 or not digits.isdigit():
            return False
        # 1xxx… is Presidio's UATP branch: 15 digits only; 13-16 digit runs starting with 1 are epoch timestamps
        if digits[0] == "1" and len(digits) != 15:
            return False
        return luhn_valid(digits)

    def _ip_ok(self, kind: str, text: str, start: int, end: int) -> bool:
        cand = text[start:end]
        before, after = _before(text, start, 12), text[end : end + 2]
        if kind == "IPV4":
            # part of a longer dotted run (OIDs, 5-part versions) or a version string
            if re.match(r"\.\d", after) or re.search(r"\d\.$", before) or _VERSION_PREFIX.search(before):
                return False
        else:
            if not any(c.isdigit() for c in cand) or re.match(r":[0-9A-Fa-f]", after):
                return False
        if kind == "IPV4" and "/" not in cand:
            return True  # the pattern only admits octets 0-255
        return bool(self._cached(kind, cand, _ip_valid))

    def _phone_end(self, text: str, start: int, end: int, trim: bool = True) -> int:
        """End of the valid phone number starting at `start`, 0 if none. A greedy candidate may have taken
        a following number ("+1 415 555 0132 12 34"): trailing groups are dropped until it validates."""
        if _DATE_LIKE.match(text[start:end]):
            return 0
        before = _before(text, start, 2)
        if text[start] != "+" and (_ID_PREFIX.search(before) or _NUMBER_PREFIX.search(before)):
            return 0
        while end > start:
            cand = text[start:end]
            digits = sum(c.isdigit() for c in cand)
            if digits < 7:
                return 0
            if digits <= 15 and not _MIXED_DOTS.search(cand):
                if cand.isdigit() and not _PHONE_CONTEXT.search(text[max(0, start - 32) : start]):
                    return 0  # a bare digit run is an id or a timestamp unless the text says it is a number to call
                if self._cached(PHONE_NUMBER, cand, self._phone_valid):
                    return end
            cut = max(cand.rfind(" "), cand.rfind("-"), cand.rfind("."))
            if cut <= 0 or not trim:
                return 0
            end = start + cut
        return 0

    def _phone_valid(self, cand: str) -> bool:
        pn = self._phonenumbers
        regions: tuple[str | None, ...] = (None,) if cand.startswith("+") else self.regions
        for region in regions:
            try:
                number = pn.parse(cand, region)
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(number):
                return True
        return False


_ESCAPE_BEFORE = re.compile(r'\\(?:[nrtbf"/\\]|u[0-9A-Fa-f]{4})$')


def _before(text: str, start: int, n: int) -> str:
    """The n characters before a candidate, for context checks; a JSON escape right before it (`\\n`,
    `\\u201c`) separates like a space and must not read as the tail of a word ("n4111…" is no id)."""
    if (
        start
        and text[start - 1] in 'nrtbf"/\\0123456789abcdefABCDEF'
        and _ESCAPE_BEFORE.search(text[max(0, start - 8) : start])
    ):
        return " "
    return text[max(0, start - n) : start]


_NO_SEPARATORS = str.maketrans("", "", " -")
# each digit doubled, with the digits of the result summed: again one digit (0 2 4 6 8 1 3 5 7 9)
_LUHN_DOUBLED = str.maketrans("0123456789", "".join(str((2 * d) // 10 + (2 * d) % 10) for d in range(10)))


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum (Presidio's credit card check) of an ASCII digit string, summed as bytes in C:
    every second digit from the right doubled (by translation), the sum a multiple of 10."""
    doubled = digits[-2::-1][::2].translate(_LUHN_DOUBLED)
    return (sum(digits[::-1][::2].encode()) + sum(doubled.encode()) - 48 * len(digits)) % 10 == 0


def _ip_valid(cand: str) -> bool:
    try:
        ipaddress.ip_interface(cand)
    except ValueError:
        return False
    return True


def _mixed(token: str, classes: int) -> bool:
    """At least `classes` of lower/upper/digit: random tokens have them, words and slugs do not."""
    kinds = (any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token))
    return sum(kinds) >= classes


# -- the scanner ----------------------------------------------------------------------------------------
@dataclass
class Scanner:
    """Finds validated entities: over an Arrow column with RE2, or in one Python string."""

    entities: frozenset[str]
    validators: Validators = field(default_factory=Validators)
    deny: DenyList = field(default_factory=lambda: DenyList({}, {}))
    kinds: tuple[str, ...] = field(init=False)
    re2_pattern: str = field(init=False)
    rewrite: str = field(init=False)
    python: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        kinds: list[str] = []
        for kind in KIND_ORDER:
            entity = KIND_ENTITY.get(kind, kind)
            if kind == DENY:
                if self.deny:
                    kinds.append(kind)
            elif kind == "SECRET":
                if self.entities & set(SECRET_ENTITIES):
                    kinds.append(kind)
            elif entity in self.entities:
                kinds.append(kind)
        self.kinds = tuple(kinds)
        parts = [self._kind_pattern(k) for k in self.kinds]
        # no capture groups for RE2: with only \0 in the rewrite it finds match bounds with its DFAs (capture
        # groups that name the kind measured 2x slower), and the kind of a candidate is found in Python
        # (`parse_marked`) on the few candidates there are
        self.re2_pattern = "|".join(f"(?:{p})" for p in parts)
        self.rewrite = OPEN + "\\0" + CLOSE
        self.python = re.compile("|".join(f"(?P<k{i}>{p})" for i, p in enumerate(parts)) or "(?!)", re.ASCII)

    def _kind_pattern(self, kind: str) -> str:
        if kind == DENY:
            return self.deny.re2_pattern()
        if kind == "SECRET":
            wanted = [strip_named_groups(p) for e, p in SECRET_PATTERNS if e in self.entities]
            return "(?:" + "|".join(wanted) + ")"
        return strip_named_groups(STRUCTURED_PATTERNS[kind])

    # RE2 over a column
    def match_column(self, values: pa.Array) -> np.ndarray:
        """Which values hold at least one candidate (RE2 runs this as a DFA: the fast, whole-column pass)."""
        if not self.re2_pattern or not len(values):
            return np.zeros(len(values), bool)
        found = pc.match_substring_regex(values, self.re2_pattern)
        return found.fill_null(False).to_numpy(zero_copy_only=False)

    def mark_column(self, values: pa.Array) -> pa.Array:
        """Every candidate wrapped in OPEN … CLOSE (RE2 GlobalReplace with the whole match as the rewrite)."""
        if not self.re2_pattern:
            return values
        return pc.replace_substring_regex(values, self.re2_pattern, self.rewrite)

    def parse_marked(self, original: str, marked: str) -> list[Finding]:
        """Candidates from a marked string (positions in `original`), validated. The kind of each is the
        alternative RE2 took at its position: leftmost-first, so the first kind that matches there, which is
        what the combined Python pattern's first matching group says (one C-level match per candidate)."""
        found: list[Finding] = []
        match, kinds, check = self.python.match, self.kinds, self._check
        pieces = marked.split(OPEN)
        pos = len(pieces[0])
        for piece in pieces[1:]:
            cand, _, rest = piece.partition(CLOSE)
            m = match(original, pos)
            if m is not None:
                kind = kinds[int(m.lastgroup[1:])]  # type: ignore[index]
                start = pos if original[pos] != "\\" else _cut_escape(original, pos)
                found.extend(check(kind, original, start, pos + len(cand)))
            pos += len(cand) + len(rest)
        return found

    def _check(self, kind: str, text: str, start: int, end: int) -> list[Finding]:
        if kind == DENY:
            entity = self.deny.entity_of(text[start:end])
            return [Finding(start, end, entity)] if entity else []
        return self.validators.check(kind, text, start, end)

    # Python on one string
    def scan_text(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for m in self.python.finditer(text):
            name = m.lastgroup or ""
            kind = self.kinds[int(name[1:])]
            found.extend(self._check(kind, text, _cut_escape(text, m.start()), m.end()))
        return found


def _cut_escape(text: str, start: int) -> int:
    """Where the entity starts when its match began with a JSON escape (see `_B`)."""
    if text[start] != "\\":
        return start
    return start + (6 if text[start + 1] == "u" else 2)


def resolve(findings: list[Finding], priority: dict[str, int] | None = None) -> list[Finding]:
    """Non-overlapping findings, sorted by start: the higher-priority, then longer, one wins an overlap."""
    if len(findings) < 2:
        return findings
    if all(a.end <= b.start for a, b in itertools.pairwise(findings)):
        return findings  # already in order, no overlap: the pattern pass alone gives this
    prio = priority or {}
    ordered = sorted(findings, key=lambda f: (-prio.get(f.entity, 0), f.start - f.end, f.start))
    taken: list[Finding] = []
    for f in ordered:
        if all(f.end <= t.start or f.start >= t.end for t in taken):
            taken.append(f)
    return sorted(taken, key=lambda f: f.start)
