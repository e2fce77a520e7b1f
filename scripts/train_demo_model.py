"""Train Tessera's bundled demo model: a tiny Llama that writes English-like text.

What it is
    A ~4M-parameter ``LlamaForCausalLM`` (hidden 256, 4 layers, 4 query heads over 2 KV heads so
    the engine's GQA path is exercised, SwiGLU 688, RoPE theta 10000, tied embeddings) with a
    4096-entry byte-level BPE tokenizer and a small chat template. It exists for demos and tests
    that need a real checkpoint on disk; its output looks like English but means nothing.

Data (offline, public domain / PSF-licensed text shipped with CPython)
    * ``pydoc_data.topics.topics``: the language-reference topics behind ``help()``.
    * Docstrings of a fixed list of stdlib modules and their public classes and functions.
    Code blocks, grammar rules and doctests are dropped and whitespace is normalised, so the
    model learns prose. Every document is also turned into a one-turn chat example
    ("Tell me about list displays." -> first paragraphs) so chat prompts get prose back.

Tokenizer
    Byte-level BPE trained with ``tokenizers``. Special tokens: ``<unk>`` 0, ``<s>`` 1 (bos),
    ``<|end|>`` 2 (eos and end of turn), ``<pad>`` 3, ``<|system|>``, ``<|user|>``,
    ``<|assistant|>``. Plain encodes prepend ``<s>``; the chat template writes ``<s>`` itself.
    Every training document, plain or chat, ends in ``<|end|>``, so one eos id stops both.

Training
    AdamW with linear warmup then cosine decay, batches of random 256-token windows of the
    packed token stream, a fixed number of steps sized for ~12 minutes on 2 CPU cores. Seeds,
    thread count and deterministic algorithms are fixed, so a rerun on the same
    torch/tokenizers/Python versions reproduces the weights. Weights are saved in bfloat16.

Run (from the repository root)
    nice -n 10 .venv/bin/python scripts/train_demo_model.py --out models/demo

Draft model for speculative decoding (``--draft``)
    A much smaller Llama (hidden 128, 2 layers, 2 heads, tied embeddings) that reuses the demo
    model's tokenizer unchanged (a draft must share the target's vocabulary) and learns from the
    same text, half from the labels and half by distillation from the demo model's next-token
    distribution (KL), so its guesses agree with the demo model as often as its size allows:
        nice -n 10 .venv/bin/python scripts/train_demo_model.py --draft --out models/demo-draft
    Serve the pair with ``--speculative-model models/demo-draft`` (see README, "Speculative decoding").
"""

from __future__ import annotations

import os

# Before `tokenizers` is imported: single-threaded BPE training keeps merges reproducible.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import importlib
import inspect
import json
import math
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics
from typing import NamedTuple

import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "<|end|>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
BOS, EOS, UNK, PAD = "<s>", "<|end|>", "<unk>", "<pad>"
# Written without block-tag newlines so HF's trim_blocks/lstrip_blocks rendering cannot change it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
DOC_MODULES = (
    "abc argparse array asyncio base64 bisect builtins calendar cmath collections contextlib copy csv "
    "dataclasses datetime decimal difflib enum fnmatch fractions functools getopt glob gzip hashlib "
    "heapq hmac html http.client io ipaddress itertools json logging math operator os pathlib pickle "
    "pprint queue random re secrets shlex shutil socket sqlite3 statistics string struct subprocess "
    "tempfile textwrap threading time timeit typing unittest urllib.parse uuid warnings weakref "
    "zipfile zlib"
).split()
QUESTIONS = ("Tell me about {}.", "What is {}?", "Explain {}.", "Describe {}.")
SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class TrainArgs:
    out: Path
    vocab_size: int
    seq_len: int
    batch_size: int
    num_steps: int
    warmup_steps: int
    lr: float
    seed: int
    num_threads: int
    log_every: int
    draft: bool = False  # train a draft for `teacher` (its tokenizer, distillation) instead of the demo model
    teacher: Path = Path("models/demo")


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2


DEMO_SHAPE = ModelShape()
# Small enough that drafting K tokens costs well under one target step; 2 KV heads so TP=2 still splits it.
DRAFT_SHAPE = ModelShape(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2)


class Doc(NamedTuple):
    title: str  # human-readable subject, used in chat questions
    paragraphs: list[str]


def prose_paragraphs(text: str) -> list[str]:
    """Prose paragraphs of reST-ish doc text, each reflowed to one line."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip() and not re.fullmatch(r"\s*[*=~^-]{3,}\s*", ln)]
        if not lines or lines[0].startswith((" ", "\t")):  # indented: code, grammar or a table
            continue
        para = " ".join(" ".join(lines).split())
        letters = sum(c.isalpha() or c == " " for c in para)
        if ">>>" in para or "::=" in para or letters < 0.8 * len(para) or len(para) < 20:
            continue
        out.append(para.replace("::", ":"))
    return out


def load_docs() -> list[Doc]:
    """Language-reference topics plus stdlib docstrings, in a fixed order."""
    docs = []
    for key in sorted(topics):
        title, _, body = topics[key].strip().partition("\n")
        if paras := prose_paragraphs(body):
            docs.append(Doc(title.strip().lower(), paras))
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. typing.io deprecation on attribute access
        for mod_name in DOC_MODULES:
            mod = importlib.import_module(mod_name)
            objs: list[tuple[str, object]] = [(mod_name, mod)]
            for name in sorted(vars(mod)):
                obj = vars(mod)[name]
                if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
                    continue
                if mod_name != "builtins" and getattr(obj, "__module__", None) != mod.__name__:
                    continue  # re-exports are documented where they live
                objs.append((f"{mod_name}.{name}", obj))
                if inspect.isclass(obj):
                    objs += [(f"{mod_name}.{name}.{m}", f) for m, f in sorted(vars(obj).items())
                             if not m.startswith("_") and inspect.isroutine(f)]
            for qualname, obj in objs:
                doc = inspect.getdoc(obj)
                if doc and doc not in seen and (paras := prose_paragraphs(doc)):
                    seen.add(doc)
                    docs.append(Doc(qualname, paras))
    return docs


def render_texts(docs: list[Doc], rng: random.Random) -> list[str]:
    """One plain document and one chat example per Doc, every one ending in EOS."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(CHAT_TEMPLATE)
    texts = []
    for doc in docs:
        texts.append(BOS + doc.title + "\n\n" + "\n\n".join(doc.paragraphs) + EOS)
        answer = doc.paragraphs[0]
        if len(doc.paragraphs) > 1 and len(answer) < 300:
            answer += "\n\n" + doc.paragraphs[1]
        messages = [{"role": "user", "content": rng.choice(QUESTIONS).format(doc.title)},
                    {"role": "assistant", "content": answer}]
        if rng.random() < 0.25:
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        texts.append(template.render(messages=messages, bos_token=BOS, add_generation_prompt=False))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE; special tokens are atomic and never produced by merges."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    specials = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    tok.train_from_iterator((specials.sub(" ", t) for t in texts), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=PAD, additional_special_tokens=SPECIAL_TOKENS[4:],
                                   chat_template=CHAT_TEMPLATE, model_max_length=1024, clean_up_tokenization_spaces=False)


def create_model(tokenizer: PreTrainedTokenizerFast, vocab_size: int, shape: ModelShape = DEMO_SHAPE) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, max_position_embeddings=1024, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, args: TrainArgs) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.num_steps - args.warmup_steps)
    return args.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def train(model: LlamaForCausalLM, stream: torch.Tensor, args: TrainArgs,
          teacher: LlamaForCausalLM | None = None) -> float:
    """Train in place on random windows of `stream`; returns the mean loss of the last log window.
    With a teacher, half the loss is KL(teacher || model) on every position (distillation)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    recent: list[float] = []
    start = time.perf_counter()
    for step in range(args.num_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        starts = torch.randint(0, len(stream) - args.seq_len, (args.batch_size,), generator=gen)
        batch = torch.stack([stream[s:s + args.seq_len] for s in starts.tolist()])  # [B, T]
        out = model(input_ids=batch, labels=batch)
        loss = out.loss
        if teacher is not None:
            with torch.no_grad():
                target_logp = torch.log_softmax(teacher(input_ids=batch).logits.float(), dim=-1)
            logp = torch.log_softmax(out.logits.float(), dim=-1)
            kl = torch.nn.functional.kl_div(logp.flatten(0, 1), target_logp.flatten(0, 1), log_target=True,
                                            reduction="batchmean")
            loss = 0.5 * loss + 0.5 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = (recent + [loss.item()])[-args.log_every:]
        if (step + 1) % args.log_every == 0 or step + 1 == args.num_steps:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1:4d}/{args.num_steps}  loss {sum(recent) / len(recent):.3f}  "
                  f"lr {lr_at(step, args):.2e}  {elapsed:6.0f}s", flush=True)
    return sum(recent) / len(recent)


def sample(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompt: str, chat: bool) -> str:
    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=40, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def write_readme(out: Path, args: TrainArgs, stats: dict[str, object], samples: list[tuple[str, str]]) -> None:
    lines = [
        "# Tessera demo model",
        "",
        "A tiny Llama-architecture causal LM bundled for demos and tests. It was trained from scratch",
        "by `scripts/train_demo_model.py`; its output is English-like but not meaningful. Do not use",
        "it for anything that needs correct answers.",
        "",
        "- Architecture: `LlamaForCausalLM`, hidden 256, 4 layers, 4 attention heads, 2 KV heads (GQA),",
        "  intermediate 688, RoPE theta 10000, max positions 1024, tied embeddings, bfloat16 weights.",
        f"- Parameters: {stats['num_params']:,}",
        f"- Tokenizer: byte-level BPE, vocab {args.vocab_size}; bos `<s>`, eos/end-of-turn `<|end|>`"
        f" (id {stats['eos_token_id']}), pad `<pad>`, roles `<|system|>` `<|user|>` `<|assistant|>`.",
        "- Chat template: `<s><|user|>\\n{content}<|end|>\\n<|assistant|>\\n`.",
        "- Data: CPython's `pydoc_data.topics` (the `help()` language-reference text) and docstrings",
        "  of common stdlib modules (PSF license), prose only, plus one chat example per document.",
        f"  {stats['num_docs']} documents, {stats['num_tokens']:,} tokens.",
        f"- Training: {args.num_steps} AdamW steps, batch {args.batch_size} x {args.seq_len} tokens,"
        f" peak lr {args.lr}, warmup {args.warmup_steps}, cosine decay, seed {args.seed},"
        f" {args.num_threads} CPU threads.",
        f"- Final training loss: {stats['final_loss']:.3f}",
        f"- Training wall time: {stats['train_s']:.0f} s (total {stats['total_s']:.0f} s)",
        "",
        "Regenerate with `nice -n 10 .venv/bin/python scripts/train_demo_model.py --out models/demo`.",
        "",
        "## Greedy samples",
        "",
    ]
    for prompt, text in samples:
        lines += [f"- `{prompt}` -> {text!r}"]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def write_draft_readme(out: Path, args: TrainArgs, stats: dict[str, object], samples: list[tuple[str, str]]) -> None:
    s = DRAFT_SHAPE
    lines = [
        "# Tessera demo draft model",
        "",
        f"The speculative-decoding draft for `{args.teacher}`: same tokenizer (copied unchanged), a much smaller",
        "Llama trained by `scripts/train_demo_model.py --draft` on the same text, half cross-entropy and half",
        "distillation (KL) from the demo model's next-token distribution.",
        "",
        f"- Architecture: `LlamaForCausalLM`, hidden {s.hidden_size}, {s.num_hidden_layers} layers, "
        f"{s.num_attention_heads} heads, {s.num_key_value_heads} KV heads, intermediate {s.intermediate_size}, "
        "tied embeddings, bfloat16 weights.",
        f"- Parameters: {stats['num_params']:,}",
        f"- Training: {args.num_steps} AdamW steps, batch {args.batch_size} x {args.seq_len} tokens, peak lr {args.lr},"
        f" seed {args.seed}, {args.num_threads} CPU threads; final loss {stats['final_loss']:.3f};"
        f" {stats['train_s']:.0f} s.",
        "",
        "Serve: `tessera serve --model-path models/demo --speculative-model models/demo-draft`.",
        "Regenerate: `nice -n 10 .venv/bin/python scripts/train_demo_model.py --draft --out models/demo-draft`.",
        "",
        "## Greedy samples",
        "",
    ]
    lines += [f"- `{prompt}` -> {text!r}" for prompt, text in samples]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def parse_args() -> TrainArgs:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("models/demo"))
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--draft", action="store_true",
                   help="train the small speculative-decoding draft for --teacher (default out models/demo-draft, "
                        "200 steps of 16 x 128 tokens)")
    p.add_argument("--teacher", type=Path, default=Path("models/demo"))
    a = p.parse_args()
    if a.draft:  # defaults sized for < 3 minutes on 2 cores
        a.out = a.out if a.out != Path("models/demo") else Path("models/demo-draft")
        a.seq_len = a.seq_len if a.seq_len != 256 else 128
        a.steps = a.steps if a.steps != 400 else 200
    return TrainArgs(out=a.out, vocab_size=a.vocab_size, seq_len=a.seq_len, batch_size=a.batch_size,
                     num_steps=a.steps, warmup_steps=a.warmup_steps, lr=a.lr, seed=a.seed,
                     num_threads=a.threads, log_every=a.log_every, draft=a.draft, teacher=a.teacher)


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)

    docs = load_docs()
    texts = render_texts(docs, random.Random(args.seed))
    teacher = None
    if args.draft:  # the draft must tokenize exactly as its target does: reuse the target's tokenizer
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.teacher)
        teacher = LlamaForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
    else:
        tokenizer = train_tokenizer(texts, args.vocab_size)
    random.Random(args.seed).shuffle(texts)
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    stream = torch.tensor([i for enc in encodings for i in enc.ids])  # [num_tokens], documents packed
    print(f"{len(docs)} docs, {len(texts)} texts, {len(stream):,} tokens, vocab {len(tokenizer)}", flush=True)

    model = create_model(tokenizer, len(tokenizer), DRAFT_SHAPE if args.draft else DEMO_SHAPE)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {num_params:,} parameters", flush=True)
    t_train = time.perf_counter()
    final_loss = train(model, stream, args, teacher)
    train_s = time.perf_counter() - t_train

    model.eval()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=True,
                                               temperature=0.8, top_p=0.95, max_new_tokens=128)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)

    samples = [(p, sample(model, tokenizer, p, chat=False)) for p in ("The list", "A function is")]
    samples += [(f"[chat] {p}", sample(model, tokenizer, p, chat=True)) for p in ("Tell me about dictionaries.",)]
    for prompt, text in samples:
        print(f"{prompt!r} -> {text!r}")
    total_s = time.perf_counter() - t0
    write = write_draft_readme if args.draft else write_readme
    write(args.out, args, {"num_params": num_params, "eos_token_id": tokenizer.eos_token_id,
                                  "num_docs": len(docs), "num_tokens": len(stream), "final_loss": final_loss,
                                  "train_s": train_s, "total_s": total_s}, samples)
    finish_files(args.out)
    print(f"final loss {final_loss:.3f}; training {train_s:.0f}s; total {total_s:.0f}s; saved to {args.out}")


def finish_files(out: Path) -> None:
    """Make the checkpoint readable by older loaders too.

    transformers 5 moves the chat template into chat_template.jinja, drops special_tokens_map.json,
    names its own tokenizer class and writes only `dtype`; transformers 4.x and engines that read
    the JSON directly look for the older spellings, which transformers 5 still accepts.
    """
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(chat_template=CHAT_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast")
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD,
               "additional_special_tokens": SPECIAL_TOKENS[4:]}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    model_cfg_path = out / "config.json"
    model_cfg = json.loads(model_cfg_path.read_text())
    model_cfg["torch_dtype"] = model_cfg["dtype"]
    model_cfg_path.write_text(json.dumps(model_cfg, indent=2, sort_keys=True) + "\n")
    for f in out.iterdir():
        f.chmod(0o644)  # safetensors writes 0600; the checkpoint is meant to be shared


if __name__ == "__main__":
    main()
