#!/usr/bin/env python3
"""The peer's throughput: Hugging Face transformers + peft `generate` with a mixed-adapter batch.

The same model folder and the same workload as `loraplex bench --device cuda --batch B --adapters K
--prompt-len P --gen G`: B prompts of P random token ids, sequence b on adapter b % K (peft's
`adapter_names=` argument of generate: one adapter name per row, each adapter loaded with load_adapter),
greedy, exactly G new tokens (min_new_tokens = max_new_tokens, so EOS never ends a row early), BF16 on the
GPU. Timed after a warm-up, each run between torch.cuda.synchronize() calls:
  - end to end: B * G tokens / the time of generate(max_new_tokens=G) (prefill included);
  - decode only: B * (G - 1) / (time(G) - time(1)), the time of generate(max_new_tokens=1) being the prefill.
Writes one JSON object (--out). Run by scripts/device-check.sh with the GPU machine's python3; no network.
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="demo model folder (HF layout)")
    ap.add_argument("--adapters", required=True, nargs="+", help="PEFT adapter folders (K of them)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    result = {"model": a.model, "batch": a.batch, "adapters": len(a.adapters), "prompt_len": a.prompt_len,
              "gen": a.gen, "repeats": a.repeats}
    try:
        import peft
        import torch
        import transformers
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                              "peft": peft.__version__}
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        result["gpu"] = torch.cuda.get_device_name(0)
        t0 = time.time()
        try:  # transformers 5 names it dtype; 4.x torch_dtype
            base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, local_files_only=True)
        except TypeError:
            base = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16, local_files_only=True)
        base = base.to("cuda").eval()
        names = [f"a{i}" for i in range(len(a.adapters))]
        model = PeftModel.from_pretrained(base, a.adapters[0], adapter_name=names[0], is_trainable=False)
        for name, path in zip(names[1:], a.adapters[1:]):
            model.load_adapter(path, adapter_name=name, is_trainable=False)
        model.eval()
        result["load_seconds"] = time.time() - t0

        vocab = base.config.vocab_size
        g = torch.Generator().manual_seed(7)
        ids = torch.randint(0, vocab, (a.batch, a.prompt_len), generator=g).to("cuda")
        mask = torch.ones_like(ids)
        row_adapters = [names[b % len(names)] for b in range(a.batch)]
        eos = base.config.eos_token_id
        pad = eos[0] if isinstance(eos, list) else (eos if eos is not None else 0)

        def run(n_new):
            torch.cuda.synchronize()
            t = time.time()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, adapter_names=row_adapters,
                                     max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                     pad_token_id=pad)
            torch.cuda.synchronize()
            secs = time.time() - t
            if out.shape != (a.batch, a.prompt_len + n_new):
                raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected "
                                   f"({a.batch}, {a.prompt_len + n_new})")
            return secs

        run(2)  # warm-up: kernels, caches, allocator
        full, first = [], []
        for _ in range(a.repeats):
            first.append(run(1))
            full.append(run(a.gen))
        t_full, t_first = statistics.median(full), statistics.median(first)
        result.update({
            "generate_seconds": full,
            "prefill_seconds": first,
            "tokens_per_s_end_to_end": a.batch * a.gen / t_full,
            "decode_tokens_per_s": a.batch * (a.gen - 1) / max(t_full - t_first, 1e-9),
            "decode_step_ms": (t_full - t_first) / max(a.gen - 1, 1) * 1e3,
            "method": "peft generate(adapter_names=...), greedy, min_new_tokens = max_new_tokens, BF16",
        })
        result["pass"] = True
    except Exception as e:  # recorded, not raised: the device check goes on
        import traceback

        result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
        result["pass"] = False
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
