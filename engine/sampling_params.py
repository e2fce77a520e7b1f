"""SamplingParams: SGLang's sampling key set, normalised and validated.

SGLang's frontend sends most keys on every call with `null`, `[]` or `top_k: -1` meaning "off";
those are accepted. A key whose non-off value asks for something not built yet raises
`SamplingParamsError` naming it (the HTTP layer turns that into a 400).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# Every integer crosses the msgpack boundary to the engine and lands in int64 tensors.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_KEYS = ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
_INT_KEYS = ("max_new_tokens", "min_new_tokens", "n", "top_k", "sampling_seed")


class SamplingParamsError(ValueError):
    """Bad sampling parameter; `param` names the offending key."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# Keys SGLang defines that ask for features not built yet: accepted only when "off".
_UNSUPPORTED_WHEN_SET = ("stop_regex", "custom_params")
# Grammar constraints (engine/grammar): at most one per request.
GRAMMAR_KEYS = ("json_schema", "regex", "ebnf", "structural_tag")
_IGNORED_KEYS = ("spaces_between_special_tokens", "no_stop_trim", "skip_special_tokens", "stream_interval")


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    no_stop_trim: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logit_bias: dict[int, float] = field(default_factory=dict)
    sampling_seed: int | None = None
    # Structured generation: JSON text ("$$ANY$$" = any JSON), a regex, an EBNF grammar, or a
    # structural tag (JSON text). Mutually exclusive.
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None

    @property
    def grammar(self) -> tuple[str, str] | None:
        """(kind, spec) of the request's grammar constraint, or None."""
        for key in GRAMMAR_KEYS:
            value = getattr(self, key)
            if value is not None:
                return key, value
        return None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["logit_bias"] = {str(k): v for k, v in self.logit_bias.items()}
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> SamplingParams:
        """Parses an SGLang-style dict; raises SamplingParamsError on bad or unsupported values."""
        raw = dict(raw or {})
        for key in _UNSUPPORTED_WHEN_SET:
            value = raw.pop(key, None)
            if value not in (None, "", [], {}):
                raise SamplingParamsError(f"sampling parameter '{key}' is not supported yet", key)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(k for k in raw if k not in known)
        if unknown:
            raise SamplingParamsError(f"unknown sampling parameter(s): {', '.join(unknown)}", unknown[0])
        clean: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None or (key in GRAMMAR_KEYS and value in ("", {}, [])):
                continue
            clean[key] = value
        _check_grammar_keys(clean)
        params = cls(**clean)
        try:
            params._check_types()
            if params.temperature < 0:
                raise SamplingParamsError(f"temperature must be >= 0, got {params.temperature}", "temperature")
            params._normalise()
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, SamplingParamsError):
                raise
            raise SamplingParamsError(f"invalid sampling parameters: {exc}") from None
        params.validate()
        return params

    def _check_types(self) -> None:
        """Rejects JSON values of the wrong kind before any arithmetic touches them."""
        number, integer = (int, float), int
        expected = {
            "max_new_tokens": integer, "min_new_tokens": integer, "n": integer, "top_k": integer,
            "temperature": number, "top_p": number, "min_p": number, "frequency_penalty": number,
            "presence_penalty": number, "repetition_penalty": number, "ignore_eos": bool, "no_stop_trim": bool,
            "skip_special_tokens": bool, "spaces_between_special_tokens": bool, "stop": (str, list),
            "stop_token_ids": list, "logit_bias": dict,
        }
        for key, kinds in expected.items():
            value = getattr(self, key)
            is_bool = isinstance(value, bool)
            if not isinstance(value, kinds) or (is_bool and kinds is not bool):
                raise SamplingParamsError(f"{key} has the wrong type ({type(value).__name__})", key)
        if self.sampling_seed is not None and (not isinstance(self.sampling_seed, int)
                                               or isinstance(self.sampling_seed, bool)):
            raise SamplingParamsError("sampling_seed must be an integer", "sampling_seed")
        for key in _INT_KEYS:
            value = getattr(self, key)
            if value is not None and not INT64_MIN <= value <= INT64_MAX:
                raise SamplingParamsError(f"{key} is out of range (it must fit in a signed 64-bit integer)", key)
        for key in _FLOAT_KEYS:
            # NaN passes every range comparison and inf poisons the logits: both are refused by name.
            try:
                finite = math.isfinite(float(getattr(self, key)))
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                raise SamplingParamsError(f"{key} must be a finite number, got {getattr(self, key)!r}", key)
        self._check_token_lists()

    def _check_token_lists(self) -> None:
        """stop_token_ids and logit_bias keys are token ids; logit_bias values are finite numbers."""
        for tok in self.stop_token_ids or []:
            if not isinstance(tok, int) or isinstance(tok, bool) or not 0 <= tok <= INT64_MAX:
                raise SamplingParamsError(f"stop_token_ids must be non-negative token ids, got {tok!r}",
                                          "stop_token_ids")
        for key, value in (self.logit_bias or {}).items():
            try:
                tok = int(key)
            except (TypeError, ValueError):
                raise SamplingParamsError(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
            if not 0 <= tok <= INT64_MAX:
                raise SamplingParamsError(f"logit_bias key {key!r} is not a valid token id", "logit_bias")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SamplingParamsError(f"logit_bias values must be numbers, got {value!r}", "logit_bias")
            try:
                finite = math.isfinite(float(value))
            except OverflowError:
                finite = False
            if not finite:
                raise SamplingParamsError(f"logit_bias values must be finite, got {value!r}", "logit_bias")

    def _normalise(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or []) if s]
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.logit_bias = {int(k): float(v) for k, v in (self.logit_bias or {}).items()}
        self.temperature = float(self.temperature)
        if self.top_k in (0, None):
            self.top_k = -1
        if self.temperature < 1e-6:
            # Greedy: SGLang sends `temperature: 0` (an int) and expects argmax.
            self.temperature = 0.0
            self.top_k = 1

    def validate(self, vocab_size: int | None = None) -> None:
        def bad(msg: str, param: str) -> None:
            raise SamplingParamsError(msg, param)

        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 0:
            bad(f"max_new_tokens must be a non-negative integer, got {self.max_new_tokens!r}", "max_new_tokens")
        if not isinstance(self.min_new_tokens, int) or self.min_new_tokens < 0:
            bad(f"min_new_tokens must be a non-negative integer, got {self.min_new_tokens!r}", "min_new_tokens")
        if self.min_new_tokens > self.max_new_tokens:
            bad(f"min_new_tokens ({self.min_new_tokens}) must be <= max_new_tokens ({self.max_new_tokens})",
                "min_new_tokens")
        if not isinstance(self.n, int) or not 1 <= self.n <= 128:
            bad(f"n must be an integer in 1..128, got {self.n!r}", "n")
        if self.temperature < 0:
            bad(f"temperature must be >= 0, got {self.temperature}", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            bad(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        if not isinstance(self.top_k, int) or (self.top_k < 1 and self.top_k != -1):
            bad(f"top_k must be -1 (off) or a positive integer, got {self.top_k!r}", "top_k")
        if not 0.0 <= self.min_p <= 1.0:
            bad(f"min_p must be in [0, 1], got {self.min_p}", "min_p")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            bad(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}", "frequency_penalty")
        if not -2.0 <= self.presence_penalty <= 2.0:
            bad(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}", "presence_penalty")
        if not 0.0 < self.repetition_penalty <= 2.0:
            bad(f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}", "repetition_penalty")
        if not all(isinstance(s, str) for s in self.stop):
            bad("stop must be a string or a list of strings", "stop")
        if len(self.stop) > 16:
            bad("at most 16 stop strings are allowed", "stop")
        if not all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids):
            bad("stop_token_ids must be non-negative integers", "stop_token_ids")
        if self.sampling_seed is not None and not isinstance(self.sampling_seed, int):
            bad("sampling_seed must be an integer", "sampling_seed")
        if vocab_size is not None:
            for name, toks in (("stop_token_ids", self.stop_token_ids), ("logit_bias", list(self.logit_bias))):
                for tok in toks:
                    if not 0 <= tok < vocab_size:
                        bad(f"token id {tok} in {name} is outside the vocabulary (0..{vocab_size - 1})", name)


def _check_grammar_keys(clean: dict[str, Any]) -> None:
    """One grammar at most; each a string (a JSON schema or structural tag may come as an object
    and is serialised, as SGLang's own clients sometimes send them)."""
    import json

    given = [k for k in GRAMMAR_KEYS if k in clean]
    if len(given) > 1:
        raise SamplingParamsError(f"'{given[0]}' and '{given[1]}' cannot be used together: "
                                  "give at most one of json_schema, regex, ebnf, structural_tag", given[1])
    for key in given:
        value = clean[key]
        if key in ("json_schema", "structural_tag") and isinstance(value, (dict, list, bool)):
            clean[key] = json.dumps(value)
        elif not isinstance(value, str):
            raise SamplingParamsError(f"{key} must be a string, got {type(value).__name__}", key)
