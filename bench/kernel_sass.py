"""Offline SASS inspection of this repo's Triton kernels for an H200 (sm_90), no GPU needed.

Compiles one @triton.jit kernel with `triton.compiler.ASTSource` + `triton.compile` for
`GPUTarget("cuda", 90, 32)`, writes its TTGIR, PTX, cubin and SASS, runs `ptxas -v` (registers, spills,
shared memory -> occupancy), finds the loops in the SASS (backward branches) and prints an opcode histogram
of the hottest one (and of the whole kernel), per loop iteration and per weight when the work per iteration
is known.

The CPU triton of `make test` has no NVIDIA backend (no ptxas / cuobjdump). Install the device machine's
triton wheel, which bundles them, next to the repo (not into .venv; it reuses .venv's torch):

    .venv/bin/python -m pip install --no-deps --target /work/sass-env triton==3.6.0

then run with that triton first on the path (env MAXNREG=N compiles with a register cap):

    PYTHONPATH=/work/sass-env .venv/bin/python bench/kernel_sass.py awq --shape 6144x4096 [--prologue 1]
        [--config block_n=128,block_k=16,num_warps=4] [--out bench/out/sass] [--dtype fp16] [--sms 132]
    PYTHONPATH=/work/sass-env .venv/bin/python bench/kernel_sass.py generic kernels.gemv:_gemv_kernel \
        --sig x_ptr=*fp16:D,N=i32:D,eps=fp32 --const BLOCK_N=64,PROLOGUE=0 --num-warps 4

`awq` builds `kernels.awq_gemv.awq_gemv`'s launch (the split-K and constexprs the launcher would pick on an
H200, or `--config`'s split_k) for the nibble-plane kernels. `generic` takes the runtime arguments' types
(`*fp16`, `*i32`, `i32`, `fp32`, ...; `:D` marks an argument the JIT would specialise as divisible by 16:
16-byte aligned pointers, ints that are multiples of 16) and the constexprs; omitted arguments must be
constexprs. Nothing here is imported by the tests or the engine; the triton import is deferred to `main`.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def _parse_sass(sass: str) -> list[tuple[int, str, str]]:
    """(address, opcode with modifiers, operands) of every instruction."""
    out = []
    for line in sass.splitlines():
        m = _INSN.search(line)
        if m:
            out.append((int(m.group(1), 16), m.group(3), m.group(4).strip()))
    return out


def _loops(insns: list[tuple[int, str, str]]) -> list[tuple[int, int]]:
    """[start, end] index ranges of backward branches (loop bodies), innermost-first by size."""
    index = {addr: i for i, (addr, _, _) in enumerate(insns)}
    loops = []
    for i, (addr, op, args) in enumerate(insns):
        if op.startswith("BRA"):
            m = re.search(r"(0x[0-9a-f]+|`\(\.L_x_\d+\))", args)
            if m and m.group(1).startswith("0x"):
                target = int(m.group(1), 16)
                if target <= addr and target in index:
                    loops.append((index[target], i))
    return sorted(set(loops), key=lambda r: r[1] - r[0])


def _hist(insns) -> collections.Counter:
    return collections.Counter(op for _, op, _ in insns)


def _base(op: str) -> str:
    return op.split(".")[0]


# Coarse classes for the per-weight table.
_CLASSES = [
    ("global loads", lambda o: o.startswith(("LDG", "LD."))),
    ("shared/local", lambda o: o.startswith(("LDS", "STS", "LDL", "STL", "LDSM", "ATOMS"))),
    ("constant/uniform", lambda o: o.startswith(("LDC", "ULDC", "S2UR", "UMOV", "UIADD", "ULOP", "USHF", "UIMAD",
                                                 "ULEA", "UISETP", "USEL", "UFLO", "UPOPC", "UPRMT", "ULDC"))),
    ("int address/index", lambda o: o.startswith(("IADD", "IMAD", "LEA", "SHF", "ISETP", "SEL", "IABS", "MOV",
                                                  "IMNMX", "VIADD", "PRMT", "P2R", "R2P", "PLOP3", "SGXT"))),
    ("LOP3", lambda o: o.startswith("LOP3")),
    ("FADD/FMUL", lambda o: o.startswith(("FADD", "FMUL"))),
    ("FFMA", lambda o: o.startswith("FFMA")),
    ("fp16x2 (HADD2/HFMA2/HMUL2)", lambda o: o.startswith(("HADD2", "HFMA2", "HMUL2"))),
    ("conversions (F2F/I2F/F2I/F2FP)", lambda o: o.startswith(("F2F", "I2F", "F2I", "F2FP", "I2FP", "F2IP"))),
    ("shuffles", lambda o: o.startswith("SHFL")),
    ("control (BRA/BAR/BSSY/...)", lambda o: o.startswith(("BRA", "BAR", "BSSY", "BSYNC", "EXIT", "WARPSYNC",
                                                           "NOP", "DEPBAR", "YIELD", "CALL", "RET", "ERRBAR"))),
]


def _classify(op: str) -> str:
    for name, test in _CLASSES:
        if test(op):
            return name
    return "other"


def occupancy(regs: int, smem: int, num_warps: int, max_warps: int = 64, regfile: int = 65536,
              smem_max: int = 228 * 1024) -> dict:
    """Blocks and warps per SM on sm_90 from ptxas's registers and shared memory."""
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = regfile // (regs_per_warp * num_warps)
    by_warps = max_warps // num_warps
    by_smem = smem_max // smem if smem else 32
    blocks = max(0, min(32, by_regs, by_warps, by_smem))
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * num_warps,
            "occupancy": round(blocks * num_warps / max_warps, 3)}


def ptxas_info(ptxas: str, ptx_path: Path, arch: str = "sm_90a") -> dict:
    res = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", str(ptx_path), "-o", str(ptx_path.with_suffix(".v.o"))],
                         capture_output=True, text=True)
    log = res.stdout + res.stderr
    info = {"ptxas_log": log.strip()}
    if m := re.search(r"Used (\d+) registers", log):
        info["registers"] = int(m.group(1))
    if m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log):
        info["spill_stores"], info["spill_loads"] = int(m.group(1)), int(m.group(2))
    if m := re.search(r"(\d+) bytes stack frame", log):
        info["stack_frame"] = int(m.group(1))
    m = re.search(r"(\d+) bytes smem", log)
    info["smem_static"] = int(m.group(1)) if m else 0
    return info


def compile_kernel(fn, signature: dict, constexprs: dict, attrs: dict, num_warps: int, out_dir: Path,
                   tag: str, num_stages: int = 3, dyn_smem_hint: int | None = None) -> dict:
    """Compile for sm_90, write the artifacts, return ptxas info and the SASS text."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn, signature, constexprs, attrs)
    target = GPUTarget("cuda", 90, 32)
    kernel = triton.compile(src, target=target, options={"num_warps": num_warps, "num_stages": num_stages, **({"maxnreg": int(os.environ["MAXNREG"])} if os.environ.get("MAXNREG") else {})})
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("ttir", "ttgir", "llir", "ptx"):
        if ext in kernel.asm:
            (out_dir / f"{tag}.{ext}").write_text(kernel.asm[ext])
    cubin = out_dir / f"{tag}.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    from triton import knobs

    sass = subprocess.check_output([knobs.nvidia.cuobjdump.path, "-sass", str(cubin)], text=True)
    (out_dir / f"{tag}.sass").write_text(sass)
    info = ptxas_info(knobs.nvidia.ptxas.path, out_dir / f"{tag}.ptx")
    smem = max(info["smem_static"], int(kernel.metadata.shared or 0))
    info["smem"] = smem
    info.update(occupancy(info.get("registers", 255), smem, num_warps))
    info["sass"] = sass
    return info


def report(info: dict, tag: str, per_iter_weights: float | None, loop_choice: int | None, top: int = 40) -> dict:
    insns = _parse_sass(info["sass"])
    loops = _loops(insns)
    print(f"\n=== {tag}")
    print(f"registers {info.get('registers')}  spill stores/loads {info.get('spill_stores')}/{info.get('spill_loads')}"
          f"  stack {info.get('stack_frame')}  smem {info['smem']} B  -> {info['blocks_per_sm']} blocks "
          f"({info['warps_per_sm']} warps) per SM, occupancy {info['occupancy']}")
    print(f"{len(insns)} SASS instructions; loops (instructions): "
          + ", ".join(f"#{i} [{insns[a][0]:#x}..{insns[b][0]:#x}] {b - a + 1}" for i, (a, b) in enumerate(loops)))
    result = {"registers": info.get("registers"), "spills": info.get("spill_stores"), "total": len(insns)}
    if not loops:
        body = insns
    else:
        # Default: the largest loop (the main K loop; the prologue / split reduction loops are small).
        a, b = loops[loop_choice] if loop_choice is not None else max(loops, key=lambda r: r[1] - r[0])
        body = insns[a:b + 1]
    hist = _hist(body)
    classes = collections.Counter()
    for op, c in hist.items():
        classes[_classify(op)] += c
    n = len(body)
    result.update({"loop": n, "classes": dict(classes)})
    scale = f" = {n / per_iter_weights:.2f} per weight ({per_iter_weights:g} weights / thread / iteration)" \
        if per_iter_weights else ""
    print(f"hot loop: {n} instructions per iteration{scale}")
    for name, c in classes.most_common():
        per = f"{c / per_iter_weights:7.3f}/w" if per_iter_weights else ""
        print(f"  {name:34} {c:5} {per}")
    print("  opcodes:")
    for op, c in hist.most_common(top):
        per = f"{c / per_iter_weights:7.3f}/w" if per_iter_weights else ""
        print(f"    {op:34} {c:5} {per}")
    full = _hist(insns)
    print("whole kernel, top opcodes: " + ", ".join(f"{op} {c}" for op, c in full.most_common(15)))
    if per_iter_weights:
        result["per_weight"] = n / per_iter_weights
    return result


def _kv(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


def _num(v: str):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def _sig_attrs(fn, sig: dict[str, str], consts: dict) -> tuple[dict, dict]:
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            continue
        ty = sig[name]
        if ty.endswith(":D"):
            ty = ty[:-2]
            attrs[(i,)] = [["tt.divisibility", 16]]
        signature[name] = ty
    return signature, attrs


def awq_launch(shape: str, prologue: int, cfg_text: str, dtype: str, sms: int, group: int = 128):
    """kernels.awq_gemv's launch for the nibble-plane kernels: (fn, sig, consts, num_warps, weights per thread
    per group-loop iteration, description)."""
    import triton

    from kernels import awq_gemv as mod

    n, k = (int(v) for v in shape.split("x"))
    cfg = mod.AwqGemvConfig(**{key: _num(v) if v != "None" else None for key, v in _kv(cfg_text).items()})
    block_k = min(cfg.block_k, group)
    num_n = triton.cdiv(n, cfg.block_n)
    num_groups = k // group
    split = cfg.split_k or max(1, min(num_groups, triton.cdiv(4 * sms, num_n)))
    k_per_split = triton.cdiv(num_groups, split) * group
    split = triton.cdiv(k, k_per_split)
    fn = mod._awq_gemv_planes_kernel
    consts = {"GROUP": group, "BLOCK_N": cfg.block_n, "BLOCK_K": block_k, "SPLIT_K": split, "PROLOGUE": prologue,
              "HAS_BIAS": False, "ADD_RESIDUAL": False, "NORM_BLOCK": min(triton.next_power_of_2(k), 4096)}
    if getattr(cfg, "mma", 0):  # AwqGemvConfig.mma (2026-12-03, ninth session): the tensor-core loop
        from kernels.awq_mma import _awq_mma_kernel as fn

        consts["X_SCALE"] = 0.00390625 if dtype == "bf16" else 1.0
        consts["ASM"] = 1
        ptr = f"*{dtype}:D"
        sig = {"x_ptr": ptr, "norm_w_ptr": ptr, "qw_ptr": "*i32:D", "qz_ptr": "*i32:D", "sc_ptr": ptr,
               "bias_ptr": ptr, "res_ptr": ptr, "part_ptr": "*fp32:D", "lock_ptr": "*i32:D", "out_ptr": ptr,
               "N": "i32:D", "K": "i32:D", "K_PER_SPLIT": "i32:D", "stride_q": "i32:D", "eps": "fp32"}
        per_iter = group * cfg.block_n / (32 * cfg.num_warps)  # weights per thread per group
        desc = f"awq-mma {n}x{k} prologue={prologue} {cfg} split_k={split} k_per_split={k_per_split}"
        return fn, sig, consts, cfg.num_warps, per_iter, desc
    if "LEAN" in fn.arg_names:  # AwqGemvConfig.lean (2026-12-03): the lean group loop
        consts["LEAN"] = int(getattr(cfg, "lean", 0))
        consts["ASM"] = 1  # what awq_gemv passes on CUDA
    ptr = f"*{dtype}:D"
    sig = {"x_ptr": ptr, "norm_w_ptr": ptr, "qw_ptr": "*i32:D", "qz_ptr": "*i32:D", "sc_ptr": ptr, "bias_ptr": ptr,
           "res_ptr": ptr, "part_ptr": "*fp32:D", "lock_ptr": "*i32:D", "out_ptr": ptr,
           "N": "i32:D", "K": "i32:D", "K_PER_SPLIT": "i32:D", "stride_q": "i32:D", "eps": "fp32"}
    if "magic" in fn.arg_names:
        sig["magic"] = "i32:D"  # 0x4B000000
    per_iter = group * cfg.block_n / (32 * cfg.num_warps)  # weights per thread per group
    desc = f"awq {n}x{k} prologue={prologue} {cfg} split_k={split} k_per_split={k_per_split}"
    return fn, sig, consts, cfg.num_warps, per_iter, desc


_FP8_PROLOGUES = {"qkv": 1, "o": 0, "gate_up": 1, "down": 2}  # what the fused decode path passes (bench/gemv_bench.py)


def fp8_launch(shape: str, prologue: int | None, cfg_text: str, dtype: str, sms: int):
    """kernels.fp8_gemv.fp8_gemv's launch: (fn, sig, consts, num_warps, num_stages, weights per thread per K-loop
    iteration, description). `--config` empty: the H200 FP8_TUNED tile of the shape, else `default_config`."""
    import triton

    from kernels import fp8_gemv as mod
    from kernels.quant_gemv_configs import FP8_TUNED

    n, k = (int(v) for v in shape.split("x"))
    mod.device_num_sms = lambda device: sms  # default_config's split-K choice for an H200 on a CPU box
    if cfg_text == "default":
        cfg = mod.default_config(n, k, _FakeCuda(sms))
    elif cfg_text:
        cfg = mod.Fp8GemvConfig(**{key: _num(v) for key, v in _kv(cfg_text).items()})
    else:
        entry = FP8_TUNED["NVIDIA H200/132sm"].get(f"{n}x{k}")
        cfg = mod.Fp8GemvConfig(**entry) if entry else mod.default_config(n, k, _FakeCuda(sms))
    if prologue is None:  # the engine's prologue for the Llama-8B shape, else none
        names = {(6144, 4096): "qkv", (4096, 4096): "o", (28672, 4096): "gate_up", (4096, 14336): "down"}
        prologue = _FP8_PROLOGUES.get(names.get((n, k), ""), 0)
    residual = prologue != 1  # o / down add the residual stream; qkv / gate_up do not
    split = max(int(cfg.split_k), 1)
    k_per_split = triton.cdiv(triton.cdiv(k, split), cfg.block_k) * cfg.block_k
    split = triton.cdiv(k, k_per_split)
    use_dot = bool(cfg.use_dot) and dtype in ("fp16", "bf16")
    fn = mod._fp8_gemv_kernel
    consts = {"PROLOGUE": prologue, "HAS_BIAS": False, "ADD_RESIDUAL": residual and split == 1, "SPLIT": split > 1,
              "EVEN_N": n % cfg.block_n == 0, "EVEN_K": k % k_per_split == 0 and k_per_split % cfg.block_k == 0,
              "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k, "NORM_BLOCK": min(triton.next_power_of_2(k), 4096),
              "NUM_STAGES": cfg.num_stages, "USE_DOT": use_dot}
    if "LEAN" in fn.arg_names:  # Fp8GemvConfig.lean (2026-12-03, ninth session): the lean K loop
        consts["LEAN"] = int(getattr(cfg, "lean", 0)) if not use_dot else 0
    # PDL (thirteenth session), the ring loop (nineteenth), the early-KV trigger (twentieth): as the engine launches
    # the plain GEMV (PDL and TRIGGER off)
    for name in ("PDL", "RING", "ASM", "TRIGGER"):
        if name in fn.arg_names:
            consts[name] = {"PDL": 0, "RING": int(getattr(cfg, "ring", 0)) and not use_dot, "ASM": 1,
                            "TRIGGER": 0}[name]
    if consts.get("RING"):
        consts["LEAN"] = 0
    ptr = f"*{dtype}:D"
    sig = {"x_ptr": ptr, "norm_w_ptr": ptr if prologue == 1 else "*fp32:D",
           "w_ptr": "*fp8e4nv:D", "scale_ptr": "*fp32:D", "bias_ptr": "*fp32:D",
           "res_ptr": ptr, "out_ptr": ptr, "ws_ptr": "*fp32:D" if split > 1 else ptr,
           "N": "i32:D", "K": "i32:D", "K_PER_SPLIT": "i32:D", "stride_wn": "i32:D", "eps": "fp32"}
    per_iter = cfg.block_n * cfg.block_k / (32 * cfg.num_warps)  # weights per thread per K-chunk
    per_iter *= max(consts.get("LEAN", 0), 1)  # the lean loop's iteration is LEAN chunks
    desc = f"fp8 {n}x{k} prologue={prologue} residual={residual} {cfg} split={split} k_per_split={k_per_split}"
    return fn, sig, consts, cfg.num_warps, cfg.num_stages, per_iter, desc


class _FakeCuda:
    """A torch.device stand-in for `default_config` on a CPU box (its SM count is patched in)."""

    type = "cuda"
    index = 0

    def __init__(self, sms: int) -> None:
        self.sms = sms


def main() -> None:
    os.environ["TRITON_INTERPRET"] = "0"  # kernels/__init__ defaults to the interpreter without CUDA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p_awq = sub.add_parser("awq", help="kernels.awq_gemv's nibble-plane kernel as awq_gemv launches it")
    p_awq.add_argument("--shape", default="6144x4096", help="N x K of the logical weight")
    p_awq.add_argument("--prologue", type=int, default=0, help="0 none, 1 RMSNorm, 2 SiLU-and-mul")
    p_awq.add_argument("--config", default="", help="AwqGemvConfig fields, e.g. block_n=128,block_k=16")
    p_awq.add_argument("--dtype", default="fp16")
    p_awq.add_argument("--sms", type=int, default=132, help="SMs for the launcher's split-K choice (H200: 132)")
    p_fp8 = sub.add_parser("fp8", help="kernels.fp8_gemv's kernel as fp8_gemv launches it")
    p_fp8.add_argument("--shape", default="6144x4096", help="N x K of the weight")
    p_fp8.add_argument("--prologue", type=int, default=None,
                       help="0 none, 1 RMSNorm, 2 SiLU-and-mul (default: the engine's for a Llama-8B shape)")
    p_fp8.add_argument("--config", default="",
                       help="Fp8GemvConfig fields, or 'default' (default_config); empty: the H200 FP8_TUNED tile")
    p_fp8.add_argument("--dtype", default="bf16")
    p_fp8.add_argument("--sms", type=int, default=132)
    p_gen = sub.add_parser("generic", help="any kernel: module:function, --sig, --const")
    p_gen.add_argument("kernel", help="e.g. kernels.gemv:_gemv_kernel")
    p_gen.add_argument("--sig", default="", help="name=type[:D],... for the runtime arguments")
    p_gen.add_argument("--const", default="", help="name=value,... constexprs")
    p_gen.add_argument("--num-warps", type=int, default=4)
    p_gen.add_argument("--weights-per-iter", type=float, default=None, help="per thread, for the per-weight column")
    for p in (p_awq, p_fp8, p_gen):
        p.add_argument("--num-stages", type=int, default=3)
        p.add_argument("--loop", type=int, default=None, help="loop index to histogram (default: the largest)")
        p.add_argument("--out", default="bench/out/sass")
        p.add_argument("--tag", default=None)
    args = parser.parse_args()

    if args.mode == "awq":
        fn, sig, consts, num_warps, per_iter, desc = awq_launch(args.shape, args.prologue, args.config, args.dtype,
                                                                args.sms)
        tag = args.tag or f"awq_{args.shape}_p{args.prologue}" + (
            "_" + args.config.replace("=", "").replace(",", "_") if args.config else "")
        if "mma=1" in args.config:  # the tensor-core loop: the tile's num_stages, as awq_gemv passes it
            args.num_stages = int(_kv(args.config).get("num_stages", 1))
    elif args.mode == "fp8":
        # The launcher leaves the compile option num_stages at Triton's default (3, --num-stages); the tile's
        # NUM_STAGES reaches the K loop through tl.range.
        fn, sig, consts, num_warps, _, per_iter, desc = fp8_launch(args.shape, args.prologue, args.config,
                                                                   args.dtype, args.sms)
        tag = args.tag or f"fp8_{args.shape}_p{consts['PROLOGUE']}" + (
            "_" + args.config.replace("=", "").replace(",", "_") if args.config else "_tuned")
    else:
        mod_name, fn_name = args.kernel.split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        sig = _kv(args.sig)
        consts = {key: _num(v) for key, v in _kv(args.const).items()}
        num_warps, per_iter, desc = args.num_warps, args.weights_per_iter, args.kernel
        tag = args.tag or fn_name
    print(desc)
    signature, attrs = _sig_attrs(fn, sig, consts)
    info = compile_kernel(fn, signature, consts, attrs, num_warps, Path(args.out), tag, args.num_stages)
    report(info, tag, per_iter, args.loop)
    print(f"artifacts: {Path(args.out) / tag}.{{ttgir,ptx,cubin,sass}}")


if __name__ == "__main__":
    main()
