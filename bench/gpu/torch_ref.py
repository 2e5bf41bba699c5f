"""PyTorch side of bench/gpu: the same work, shapes, dtypes and timing method as wick's
`gpu_bench` (device synchronised around every timed group, warm-up first, median of repeats).
Prints `RESULT {json}` lines that table.py pairs with wick's. Random weights, real shapes.

    python3 bench/gpu/torch_ref.py [gemm decode prefill train embed attn]
"""
import json
import sys
import time

import torch

DEV = "cuda"


def result(section, name, value, unit, extra=""):
    print("RESULT " + json.dumps(dict(side="torch", section=section, name=name, value=value,
                                      unit=unit, extra=extra)), flush=True)


def time_median(warmup, repeats, inner, f):
    for i in range(warmup):
        f(i)
    torch.cuda.synchronize()
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        for i in range(inner):
            f(r * inner + i)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) / inner)
    times.sort()
    return times[len(times) // 2]


GEMMS = [("gemm 4096^3", 4096, 4096, 4096), ("gemm 8192^3", 8192, 8192, 8192),
         ("gemm 16384x4864x896", 16384, 4864, 896), ("lora A 4096x16x896", 4096, 16, 896),
         ("lora B 4096x4864x16", 4096, 4864, 16)]


def gemm():
    for name, m, n, k in GEMMS:
        sets = [(torch.randn(m, k, device=DEV).bfloat16(), torch.randn(n, k, device=DEV).bfloat16())
                for _ in range(3)]
        inner = 5 if m * n * k > 1 << 36 else 20
        t = time_median(5, 15, inner, lambda i: torch.matmul(sets[i % 3][0], sets[i % 3][1].t()))
        result("gemm", name, 2 * m * n * k / t / 1e12, "TFLOP/s", f"{t * 1e3:.4f} ms")


def qwen2(dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                      num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                      rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768,
                      tie_word_embeddings=True, hidden_act="silu")
    torch.manual_seed(0)
    with torch.device(DEV):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    return model.eval()


PROMPT, NEW_TOKENS = 16, 128


@torch.no_grad()
def greedy(model, batch, steps):
    from transformers import DynamicCache
    ids = (torch.arange(batch * PROMPT, device=DEV) * 7919 + 13) % 151000
    ids = ids.reshape(batch, PROMPT)
    cache = DynamicCache()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    nxt = out.logits[:, -1].argmax(-1)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        nxt_host = nxt.tolist()  # read back each token, as generation does
        ids = torch.tensor(nxt_host, device=DEV).reshape(batch, 1)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1)
    nxt.tolist()
    return time.perf_counter() - t


def decode():
    model = qwen2(torch.bfloat16)
    for batch in (1, 8):
        greedy(model, batch, 8)
        times = sorted(greedy(model, batch, NEW_TOKENS) for _ in range(3))
        result("decode", f"decode bf16 batch {batch}", batch * NEW_TOKENS / times[1], "tok/s",
               f"{times[1] / NEW_TOKENS * 1e3:.3f} ms/step")


@torch.no_grad()
def prefill():
    model = qwen2(torch.bfloat16)
    ids = ((torch.arange(512, device=DEV) * 7919 + 13) % 151000).reshape(1, 512)

    def step(_):
        from transformers import DynamicCache
        model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
    t = time_median(3, 10, 1, step)
    result("prefill", "prefill bf16 512 tokens", 512 / t, "tok/s", f"{t * 1e3:.3f} ms")


def train():
    from peft import LoraConfig, get_peft_model
    rows, cols, steps = 8, 512, 12
    model = qwen2(torch.bfloat16)
    model.config.use_cache = False
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                            weight_decay=0.0)
    batches = [((torch.arange(rows * cols, device=DEV) * 7919 + b * 104729 + 13) % 151000)
               .reshape(rows, cols) for b in range(4)]
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for s in range(steps):
        ids = batches[s % 4]
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        torch.cuda.synchronize()
        if s >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    t = times[len(times) // 2]
    result("train", "lora step tok/s", rows * cols / t, "tok/s",
           f"{t * 1e3:.1f} ms/step, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    result("train", "lora step peak memory", torch.cuda.max_memory_allocated() / 2**30, "GiB",
           "max_memory_allocated")


@torch.no_grad()
def embed():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, hidden_act="gelu", max_position_embeddings=512,
                     type_vocab_size=2, layer_norm_eps=1e-12)
    with torch.device(DEV):
        model = BertModel(cfg, add_pooling_layer=False).to(torch.bfloat16).eval()
    for docs, length in ((1, 16), (128, 128), (1024, 128)):
        ids = ((torch.arange(docs * length, device=DEV) * 7919 + 101) % 30000).reshape(docs, length)
        mask = torch.ones_like(ids)

        def step(_):
            # sentence-transformers' MiniLM: mean pooling over real tokens, then L2 normalise.
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
            e.cpu()
        t = time_median(5, 20, 1, step)
        result("embed", f"embed bf16 {docs}x{length}", docs / t, "docs/s", f"{t * 1e3:.3f} ms")


ATTN_SHAPES = [  # (name, batch, heads, kv_heads, len, head_dim, causal, key padding, backward)
    ("train 8x14/2x512x64 causal", 8, 14, 2, 512, 64, True, False, True),
    ("prefill 1x14/2x512x64 causal", 1, 14, 2, 512, 64, True, False, False),
    ("minilm 1024x12x128x32 pad", 1024, 12, 12, 128, 32, False, True, False),
]


def attn():
    """F.scaled_dot_product_attention in bf16 on wick's flash-attention shapes; TFLOP/s counted as
    gpu_bench does (4·b·h·l²·d forward, half with causal; 3.5× that for forward+backward)."""
    import torch.nn.functional as F
    for name, b, h, kvh, l, d, causal, pad, bwd in ATTN_SHAPES:
        q = torch.randn(b, h, l, d, device=DEV, dtype=torch.bfloat16)
        k = torch.randn(b, kvh, l, d, device=DEV, dtype=torch.bfloat16)
        v = torch.randn(b, kvh, l, d, device=DEV, dtype=torch.bfloat16)
        mask = None
        if pad:  # even sequences have their last quarter padded, as gpu_bench
            mask = torch.zeros(b, 1, 1, l, device=DEV, dtype=torch.bfloat16)
            mask[::2, :, :, 3 * l // 4:] = -1e9
        gqa = h != kvh
        flops = 4 * b * h * l * l * d * (0.5 if causal else 1.0)

        def fwd(_):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                  enable_gqa=gqa)
        with torch.no_grad():
            t = time_median(3, 10, 10, fwd)
        result("attn", f"attn fwd {name} bf16", flops / t / 1e12, "TFLOP/s", f"{t * 1e3:.4f} ms")
        if bwd:
            qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))
            g = torch.randn_like(q)

            def step(_):
                qg.grad = kg.grad = vg.grad = None
                o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, is_causal=causal,
                                                   enable_gqa=gqa)
                (o * g).sum().backward()
            t = time_median(3, 10, 5, step)
            result("attn", f"attn fwd+bwd {name} bf16", 3.5 * flops / t / 1e12, "TFLOP/s",
                   f"{t * 1e3:.4f} ms")


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    sections = sys.argv[1:] or ["gemm", "decode", "prefill", "train", "embed", "attn"]
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    for s in sections:
        try:
            globals()[s]()
        except Exception as e:  # one failing section must not hide the others
            print(f"ERROR {s}: {type(e).__name__}: {e}", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
