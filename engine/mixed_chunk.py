"""Mixed chunks (`--enable-mixed-chunk`): running decodes ride along with a prefill chunk.

Without it a prefill step stalls every running decode for the whole chunk (up to
`--chunked-prefill-size` tokens, ~200 ms for 8192 tokens of an 8B model), and several prefill steps
in a row stall them several times: that is the ITL tail under load. With it, each decode is one more
extend row of length 1 over its cached prefix in the same forward, so no step leaves a decode out.

The chunk budget adapts to the running decodes, because once decodes ride along, a step's duration
is every running request's inter-token latency:

    prefill tokens per step = chunked_prefill_size                                   (no decodes)
                            = max(MIN_MIXED_PREFILL_TOKENS,
                                  min(chunked_prefill_size, step_tokens - num_decodes))   (decodes)

Past the weight-read floor a forward's time grows about linearly with its tokens (GEMM rows), and a
decode row costs about one prompt token, so capping the step's tokens caps the step's time; the cap
is a token count, not a measured time, so the schedule (and with it every output) is deterministic.
The floor keeps prompts moving however many decodes run, so queued requests never starve. With no
decode running nobody waits on the chunk, so it takes the full `--chunked-prefill-size` (best TTFT
and prefill efficiency).
"""

from __future__ import annotations

from engine.args import MIN_MIXED_PREFILL_TOKENS
from engine.batch_builder import ScheduleBatch
from engine.kv_manager import KVManager
from engine.req import Req
from engine.schedule_policy import chunk_limit


def mixed_prefill_budget(chunked_prefill_size: int, step_tokens: int, num_decodes: int) -> int:
    """Prompt tokens the next step may compute while `num_decodes` decodes ride along (the rule above)."""
    limit = chunk_limit(chunked_prefill_size)
    if num_decodes == 0:
        return limit
    return max(MIN_MIXED_PREFILL_TOKENS, min(limit, step_tokens - num_decodes))


def add_decode_rows(batch: ScheduleBatch, running: list[Req], kv: KVManager) -> bool:
    """Appends `running` to the EXTEND batch as one-token rows with one fresh KV slot each (one
    allocation for all). False, and the batch unchanged, when the slots are not there: the decodes then
    wait for the next step, as they would without mixing (retraction happens on the decode path)."""
    if not running:
        return False
    slots = kv.alloc(len(running))
    if slots is None:
        return False
    for req in running:
        req.extend_len = 1
    batch.reqs.extend(running)
    batch.num_decode_rows = len(running)
    batch.decode_slots = slots
    return True
