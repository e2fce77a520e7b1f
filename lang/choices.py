"""How `select` picks among choices from their prompt logprobs (SGLang's three methods, no numpy).

Every method receives, per choice, the logprob entries `[logprob, token_id, text]` of the tokens that
spell the choice (after the context), and returns the index of the pick plus what it measured.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChoicesDecision:
    decision: str
    meta_info: dict[str, Any] = field(default_factory=dict)


class ChoicesMethod(ABC):
    """Base class; `name` is what `choices_method="..."` accepts."""

    name = ""
    requires_unconditional_logprobs = False

    @abstractmethod
    def __call__(self, *, choices: list[str], normalized_prompt_logprobs: list[float],
                 input_token_logprobs: list[list[Any]], output_token_logprobs: list[list[Any]],
                 unconditional_token_logprobs: list[list[Any]] | None = None) -> ChoicesDecision:
        """Picks one of `choices`; each method implements it."""

    def __repr__(self) -> str:
        return self.name


def _argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _meta(normalized: list[float], inputs: list[list[Any]], outputs: list[list[Any]]) -> dict[str, Any]:
    return {"normalized_prompt_logprobs": normalized, "input_token_logprobs": inputs,
            "output_token_logprobs": outputs}


class TokenLengthNormalized(ChoicesMethod):
    """The choice with the highest mean token logprob."""

    name = "token_length_normalized"

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs,
                 unconditional_token_logprobs=None) -> ChoicesDecision:
        best = _argmax(normalized_prompt_logprobs)
        return ChoicesDecision(choices[best], _meta(normalized_prompt_logprobs, input_token_logprobs,
                                                    output_token_logprobs))


class GreedyToken(ChoicesMethod):
    """Token by token, keep the choices with the best logprob at that position; a shorter choice is
    padded with its own mean so it can still compete with longer ones."""

    name = "greedy_token"

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs,
                 unconditional_token_logprobs=None) -> ChoicesDecision:
        width = max(len(option) for option in input_token_logprobs)
        matrix = []
        for option in input_token_logprobs:
            row = [float(t[0]) for t in option]
            mean = sum(row) / len(row) if row else 0.0
            matrix.append(row + [mean] * (width - len(row)))
        remaining = list(range(len(choices)))
        for j in range(width):
            top = max(matrix[i][j] for i in remaining)
            remaining = [i for i in remaining if matrix[i][j] == top]
            if len(remaining) == 1:
                break
        meta = _meta(normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs)
        meta["greedy_logprob_matrix"] = matrix
        return ChoicesDecision(choices[remaining[0]], meta)


class UnconditionalLikelihoodNormalized(ChoicesMethod):
    """The choice whose tokens gain the most from the context: mean of (logprob in context - logprob
    alone); the first unconditional logprob (no context at all) counts as 0."""

    name = "unconditional_likelihood_normalized"
    requires_unconditional_logprobs = True

    def __call__(self, *, choices, normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs,
                 unconditional_token_logprobs=None) -> ChoicesDecision:
        if unconditional_token_logprobs is None:
            raise ValueError("unconditional token logprobs are required for this method")
        scores = []
        for inputs, uncond in zip(input_token_logprobs, unconditional_token_logprobs):
            base = [t[0] for t in uncond]
            base[0] = base[0] or 0
            diffs = [float(a[0]) - float(b) for a, b in zip(inputs, base)]
            scores.append(sum(diffs) / len(diffs))
        meta = _meta(normalized_prompt_logprobs, input_token_logprobs, output_token_logprobs)
        meta.update(unconditional_token_logprobs=unconditional_token_logprobs,
                    normalized_unconditional_prompt_logprobs=scores)
        return ChoicesDecision(choices[_argmax(scores)], meta)


token_length_normalized = TokenLengthNormalized()
greedy_token_selection = GreedyToken()
unconditional_likelihood_normalized = UnconditionalLikelihoodNormalized()
METHODS = {m.name: m for m in (token_length_normalized, greedy_token_selection, unconditional_likelihood_normalized)}


def resolve_method(method: Any) -> ChoicesMethod:
    """A method object, or its name; anything else is a ValueError naming the valid ones."""
    if method is None:
        return token_length_normalized
    if isinstance(method, ChoicesMethod):
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    # SGLang's own method objects (same names, same call signature) work too.
    if callable(method) and type(method).__name__ in ("TokenLengthNormalized", "GreedyTokenSelection",
                                                      "UnconditionalLikelihoodNormalized"):
        return {"TokenLengthNormalized": token_length_normalized, "GreedyTokenSelection": greedy_token_selection,
                "UnconditionalLikelihoodNormalized": unconditional_likelihood_normalized}[type(method).__name__]
    raise ValueError(f"unknown choices_method {method!r}; use one of: {', '.join(METHODS)}")
