#!/usr/bin/env python3
"""loraplex's logits against an implementation no one here wrote: Hugging Face transformers + peft.

Loads the same synthetic model folder (config.json + model.safetensors, BF16) with transformers from the local
path, and one of its demo adapters with peft, computes the logits of fixed token ids (base model and with the
adapter), and compares them with `loraplex logits` on the GPU (--device cuda) and on the CPU. The reference is
transformers in float32 over the BF16 weights upcast (loraplex keeps activations in f32 too); transformers in
BF16 is compared as well, as a yardstick of what BF16 activations alone move.

Per sequence: relative error ||ours - ref|| / ||ref|| over all positions and the vocabulary, and top-1
agreement over all positions and over the positions where the reference's margin (top-1 minus top-2) is
clear (at least CLEAR_MARGIN x the row's standard deviation). Writes one JSON object (--out).
Run by scripts/device-check.sh with the GPU machine's python3 (torch, transformers, peft); no network.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CLEAR_MARGIN = 0.1  # top-1 minus top-2, in standard deviations of the reference's row
REL_ERR_GOAL = 1e-2  # issue 13: BF16, relative error <= 1e-2


def load_hf(model_dir, dtype, device):
    import torch
    from transformers import AutoModelForCausalLM

    try:  # transformers 5 names it dtype; 4.x torch_dtype
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, local_files_only=True)
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, local_files_only=True)
    return m.to(dtype=dtype, device=device).eval()


def hf_logits(model, ids, device):
    import torch

    with torch.no_grad():
        x = torch.tensor([ids], dtype=torch.long, device=device)
        return model(input_ids=x).logits[0].float().cpu().numpy()


def run_loraplex(loraplex, model_dir, adapter_dir, ids, device, vocab, timeout):
    """Both sequences (base, adapter) in one `loraplex logits --batch` call; returns (base, adapter, error)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "batch.json")
        with open(spec, "w") as f:
            json.dump([{"ids": ids}, {"ids": ids, "adapter": adapter_dir}], f)
        out_dir = os.path.join(tmp, "out")
        cmd = [loraplex, "logits", "--model", model_dir, "--batch", spec, "--out-dir", out_dir]
        if device != "cpu":
            cmd += ["--device", device]
        t0 = time.time()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, None, f"timed out after {timeout} s: {' '.join(cmd)}", time.time() - t0
        secs = time.time() - t0
        if r.returncode != 0:
            return None, None, f"exit {r.returncode}: {' '.join(cmd)}\n{r.stderr[-2000:]}", secs
        got = []
        for i in range(2):
            a = np.fromfile(os.path.join(out_dir, f"seq{i}.f32"), dtype="<f4")
            if a.size != len(ids) * vocab:
                return None, None, f"seq{i}.f32 has {a.size} values, expected {len(ids)} x {vocab}", secs
            got.append(a.reshape(len(ids), vocab))
        return got[0], got[1], None, secs


def compare(ours, ref):
    import numpy as np

    ours = ours.astype(np.float64)
    ref = ref.astype(np.float64)
    if not np.all(np.isfinite(ours)):
        return {"finite": False, "rel_err": None, "top1_agree": None, "top1_agree_clear": None, "pass": False}
    rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    top_ref = ref.argmax(axis=1)
    top_ours = ours.argmax(axis=1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    clear = margin >= CLEAR_MARGIN * ref.std(axis=1)
    agree = top_ref == top_ours
    clear_agree = float(agree[clear].mean()) if clear.any() else None
    return {
        "finite": True,
        "rel_err": rel,
        "top1_agree": float(agree.mean()),
        "clear_positions": int(clear.sum()),
        "top1_agree_clear": clear_agree,
        "pass": rel <= REL_ERR_GOAL and (clear_agree is None or clear_agree == 1.0),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loraplex", required=True, help="the loraplex binary")
    ap.add_argument("--model", required=True, help="demo model folder (HF layout)")
    ap.add_argument("--adapter", required=True, help="PEFT adapter folder of that model")
    ap.add_argument("--tokens", type=int, default=48, help="token ids per sequence")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--timeout", type=int, default=120, help="seconds for each loraplex run")
    a = ap.parse_args()

    result = {"model": a.model, "adapter": a.adapter, "clear_margin_std": CLEAR_MARGIN,
              "rel_err_goal": REL_ERR_GOAL, "reference": "transformers float32 over the BF16 weights"}
    try:
        import numpy as np
        import peft
        import torch
        import transformers
        from peft import PeftModel

        result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                              "peft": peft.__version__}
        device = "cuda" if torch.cuda.is_available() else "cpu"
        result["hf_device"] = device
        cfg = json.load(open(os.path.join(a.model, "config.json")))
        vocab = cfg["vocab_size"]
        rng = np.random.default_rng(13)
        ids = [int(x) for x in rng.integers(0, vocab, size=a.tokens)]
        result["ids"] = ids

        # loraplex first (the GPU is free), on the GPU and on the CPU.
        ours = {}
        for dev in ("cuda", "cpu"):
            base, adapted, err, secs = run_loraplex(a.loraplex, a.model, a.adapter, ids, dev, vocab, a.timeout)
            result[f"loraplex_{dev}_seconds"] = secs
            if err:
                result[f"loraplex_{dev}_error"] = err
            else:
                ours[dev] = {"base": base, "adapter": adapted}

        t0 = time.time()
        ref, bf16 = {}, {}
        torch.set_float32_matmul_precision("highest")  # a float32 reference: no TF32 products
        model = load_hf(a.model, torch.float32, device)
        # What transformers made of config.json's RoPE (llama3 scaling): a silently dropped scaling would
        # show as an error here, not in loraplex.
        cfg_hf = model.config
        result["hf_rope"] = str(getattr(cfg_hf, "rope_parameters", None) or getattr(cfg_hf, "rope_scaling", None))
        peft_model = PeftModel.from_pretrained(model, a.adapter, adapter_name="a", is_trainable=False)
        peft_model.eval()
        with peft_model.disable_adapter():
            ref["base"] = hf_logits(peft_model, ids, device)
        ref["adapter"] = hf_logits(peft_model, ids, device)
        # The same in BF16: what BF16 activations alone move (a yardstick, not a goal).
        peft_model = peft_model.to(torch.bfloat16)
        with peft_model.disable_adapter():
            bf16["base"] = hf_logits(peft_model, ids, device)
        bf16["adapter"] = hf_logits(peft_model, ids, device)
        del peft_model, model
        result["hf_seconds"] = time.time() - t0
        # The adapter must move the logits, or the adapter comparison proves nothing.
        result["adapter_effect_rel"] = float(np.linalg.norm(ref["adapter"] - ref["base"]) /
                                             np.linalg.norm(ref["base"]))

        cmp = {}
        for which in ("base", "adapter"):
            cmp[f"hf_bf16_vs_ref_{which}"] = compare(bf16[which], ref[which])
            for dev, o in ours.items():
                cmp[f"loraplex_{dev}_vs_ref_{which}"] = compare(o[which], ref[which])
            if "cuda" in ours and "cpu" in ours:
                cmp[f"loraplex_cuda_vs_cpu_{which}"] = compare(ours["cuda"][which], ours["cpu"][which])
        # The adapter's own contribution (adapter minus base), the part LoRA kernels compute: reported, not a
        # goal (a difference of two BF16-rounded results has a larger relative error than either).
        for dev, o in ours.items():
            cmp[f"loraplex_{dev}_vs_ref_lora_delta"] = compare(o["adapter"] - o["base"], ref["adapter"] - ref["base"])
        result["comparisons"] = cmp
        needed = [f"loraplex_cuda_vs_ref_{w}" for w in ("base", "adapter")]
        result["pass"] = (all(k in cmp and cmp[k]["pass"] for k in needed) and
                          result["adapter_effect_rel"] > 10 * REL_ERR_GOAL)
    except Exception as e:  # recorded, not raised: the device check goes on
        import traceback

        result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
        result["pass"] = False
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k not in ("ids",)}, indent=2))
    return 0 if result.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
