"""Entry point of one engine rank process (spawned by EngineClient).

Rank 0 talks to the client over ZMQ and fans each batch of incoming messages out to the other
ranks, so every rank schedules identically; only rank 0 sends results back. Any start-up failure
is reported to the client as one line (EngineErrorMsg) instead of a traceback.
"""

from __future__ import annotations

from engine.parent_watch import die_with_parent

if __name__ == "__main__":
    die_with_parent()  # before the slow imports below: a supervisor that dies meanwhile must not orphan us

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402
import zmq  # noqa: E402

from engine.args import ServerArgs  # noqa: E402
from engine.distributed.parallel_state import destroy_tp, init_tp  # noqa: E402
from engine.ipc import IpcConfig  # noqa: E402
from engine.messages import EngineErrorMsg, ReadyMsg, ShutdownReqMsg, decode, encode  # noqa: E402
from engine.step_trace import maybe_trace  # noqa: E402

logger = logging.getLogger("engine")


def _pick_device(args: ServerArgs, local_rank: int) -> torch.device:
    if args.resolved_device == "cuda":
        return torch.device("cuda", (args.base_gpu_id + local_rank) % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def _eos_ids(args: ServerArgs, tokenizer, hf_config) -> list[int]:
    from engine.tokenizer import eos_token_ids

    ids = set(eos_token_ids(tokenizer, hf_config))
    try:
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(args.model_path)
        eos = gen.eos_token_id
        ids.update(eos if isinstance(eos, list) else ([eos] if eos is not None else []))
    except Exception:  # no generation_config.json is normal
        pass
    return sorted(ids)


def run_rank(args_dict: dict, ipc_dict: dict, rank: int) -> None:
    args = ServerArgs.from_dict(args_dict)
    ipc = IpcConfig(**ipc_dict)
    logging.basicConfig(level=args.log_level.upper(), format=f"%(asctime)s [rank{rank}] %(levelname)s %(message)s")
    ctx = zmq.Context()
    recv = send = None
    if rank == 0:
        recv = ctx.socket(zmq.PULL)
        recv.connect(ipc.request_addr)
        send = ctx.socket(zmq.PUSH)
        send.connect(ipc.output_addr)

    def send_msg(msg) -> None:
        send.send(encode(msg))

    try:
        scheduler, tp, info = _build(args, ipc, rank, send_msg)
    except Exception as exc:  # report one line; details go to this process's log
        logger.debug("start-up failed:\n%s", traceback.format_exc())
        if send is not None:
            send_msg(EngineErrorMsg(message=f"{type(exc).__name__}: {exc}".splitlines()[0]))
            send.close(linger=2000)
        sys.exit(1)
    trace = maybe_trace(scheduler.runner, rank)  # TESSERA_STEP_TRACE: one line per forward (off by default)
    if rank == 0:
        send_msg(ReadyMsg(info=info))
    try:
        _loop(scheduler, tp, recv)
    finally:
        if trace is not None:
            trace.flush()
        destroy_tp()
        ctx.destroy(linger=1000)


def _build(args: ServerArgs, ipc: IpcConfig, rank: int, send_msg):
    from engine.model_config import create_model_config
    from engine.model_runner import ModelRunner
    from engine.scheduler import Scheduler
    from engine.tokenizer import load_tokenizer

    device = _pick_device(args, rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // (args.tp_size * args.dp_size)))
    addr = args.dist_init_addr or f"127.0.0.1:{ipc.dist_port}"
    tp = init_tp(rank, args.tp_size, device.type, addr)
    torch.manual_seed(args.random_seed if args.random_seed is not None else 0)
    model_config = create_model_config(args, device.type)
    tokenizer = None if args.skip_tokenizer_init else load_tokenizer(args.resolved_tokenizer_path,
                                                                       args.trust_remote_code)
    runner = ModelRunner(args, model_config, tp, device)
    eos_ids = _eos_ids(args, tokenizer, model_config.hf_config)
    scheduler = Scheduler(args, runner, tp, tokenizer, eos_ids, send_msg)
    info = {
        "model_path": args.model_path,
        "served_model_name": args.resolved_served_model_name,
        "tokenizer_path": args.resolved_tokenizer_path,
        "max_context_length": model_config.context_len,
        "vocab_size": model_config.vocab_size,
        "eos_token_ids": eos_ids,
        "max_total_tokens": runner.max_total_tokens,
        "max_running_requests": runner.max_running_requests,
        "dtype": str(model_config.dtype).removeprefix("torch."),
        "device": device.type,
        "attention_backend": runner.attention_backend_name,
        "chunked_prefill_size": runner.chunked_prefill_size,
        "tp_size": args.tp_size,
        "architectures": list(getattr(model_config.hf_config, "architectures", []) or []),
        "is_generation": True,
    }
    return scheduler, tp, info


def _loop(scheduler, tp, recv) -> None:
    poller = None
    if recv is not None:
        poller = zmq.Poller()
        poller.register(recv, zmq.POLLIN)
    while True:
        msgs = None
        if tp.is_first:
            msgs = []
            # Block when idle; otherwise take whatever arrived and get back to the GPU.
            timeout = 0 if scheduler.has_work else 1000
            while poller.poll(timeout):
                # One frame per message: the client sends messages of one event-loop turn (a batched request's
                # items) as one multipart message, so they land in the same step.
                msgs.extend(decode(frame) for frame in recv.recv_multipart())
                timeout = 0
        if tp.size > 1:
            msgs = tp.broadcast_objects(msgs)
        for msg in msgs:
            if isinstance(msg, ShutdownReqMsg):
                return
            scheduler.handle(msg)
        if scheduler.has_work:
            scheduler.step_safely()


if __name__ == "__main__":
    import json

    _payload = json.loads(os.environ.pop("TESSERA_RANK_PAYLOAD"))
    run_rank(_payload["args"], _payload["ipc"], int(sys.argv[1]))
