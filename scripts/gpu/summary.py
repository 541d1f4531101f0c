#!/usr/bin/env python3
"""OUT_DIR/device-summary.json from what scripts/device-check.sh left in its work folder, and a short table.

Reads: steps.tsv (name, status, seconds, rc of every step), gpu-name.txt, no-gpu.txt (only without a GPU),
gpu-tests.txt and gtest/<test>.json (gtest's reports), bench-1b.json / bench-8b.json (`loraplex bench
--device cuda --json`), logits.json (compare_logits.py), peer.json (peer_generate.py). Any of them may be
missing: the summary says which, and the goals that needed them fail. The goals are issue 13's.
Standard library only (it runs even where the machine's python3 lacks torch).
"""
import argparse
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return {"missing": f"no {os.path.basename(path)}"}
    except ValueError as e:
        return {"missing": f"{os.path.basename(path)} unreadable: {e}"}


def gtest_summary(work):
    out = {}
    try:
        names = [n.strip() for n in open(os.path.join(work, "gpu-tests.txt")) if n.strip()]
    except OSError:
        names = []
    for name in names:
        rep = load(os.path.join(work, "gtest", name + ".json"))
        if "missing" in rep:
            out[name] = {"status": "no report", "detail": rep["missing"]}
            continue
        tests = failures = skipped = 0
        failed, skipped_names, skip_reasons = [], [], []
        for suite in rep.get("testsuites", []):
            for t in suite.get("testsuite", []):
                tests += 1
                full = f"{suite.get('name')}.{t.get('name')}"
                if t.get("failures"):
                    failures += 1
                    failed.append(full)
                elif t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                    skipped += 1
                    skipped_names.append(full)
                    for s in t.get("skipped", []) if isinstance(t.get("skipped"), list) else []:
                        skip_reasons.append(str(s.get("message", ""))[:300])
        # On the GPU machine a skipped GPU test did not run: it counts against the check.
        status = "passed" if tests and not failures and not skipped else "failed"
        out[name] = {"status": status, "tests": tests, "failures": failures, "skipped": skipped,
                     "failed": failed[:50], "skipped_tests": skipped_names[:50],
                     "skip_reasons": sorted(set(skip_reasons))[:5]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=0)
    a = ap.parse_args()
    w = a.work

    steps = []
    try:
        for line in open(a.steps):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                steps.append({"name": parts[0], "status": parts[1], "seconds": int(parts[2]), "rc": parts[3]})
    except OSError:
        pass
    try:
        gpu = open(os.path.join(w, "gpu-name.txt")).read().strip()
    except OSError:
        gpu = "unknown"
    no_gpu = None
    if os.path.exists(os.path.join(w, "no-gpu.txt")):
        no_gpu = open(os.path.join(w, "no-gpu.txt")).read().strip()

    tests = gtest_summary(w)
    bench = {m: load(os.path.join(w, f"bench-{m}.json")) for m in ("1b", "8b")}
    logits = load(os.path.join(w, "logits.json"))
    peer = load(os.path.join(w, "peer.json"))

    checks = []

    def check(name, value, goal, ok, note=""):
        checks.append({"name": name, "value": value, "goal": goal, "pass": bool(ok), "note": note})

    def num(d, key):
        v = d.get(key) if isinstance(d, dict) else None
        return v if isinstance(v, (int, float)) else None

    check("gpu present", gpu if not no_gpu else no_gpu, "an NVIDIA GPU", not no_gpu)
    n_tests = sum(t.get("tests", 0) for t in tests.values())
    check("GPU tests", f"{sum(t['status'] == 'passed' for t in tests.values())}/{len(tests)} binaries, "
          f"{n_tests} tests", "all pass, none skipped",
          tests and all(t["status"] == "passed" for t in tests.values()))
    for m, b in bench.items():
        if "missing" in b:
            check(f"bench {m}", b["missing"], "ran", False, "bench.log has its output")
            continue
        v = num(b, "decode_b1_fraction_of_bound")
        check(f"{m} batch-1 decode / bound", v, ">= 0.7", v is not None and v >= 0.7,
              "bound = weight bytes per step / d2d copy bandwidth (bytes read + written)")
        v = num(b, "mixed_over_single_tokens_per_s")
        check(f"{m} 64 over 16 adapters / all on one", v, ">= 0.9", v is not None and v >= 0.9)
        v = num(b, "lora_overhead_mixed")
        check(f"{m} LoRA r16 step / base step (batch 64)", v, "<= 1.15", v is not None and v <= 1.15)
        v = num(b, "slot_hit_ms")
        check(f"{m} slot hit ms", v, "<= 0.1", v is not None and v <= 0.1)
        # A host -> slot copy crosses PCIe (or NVLink-C2C on a Grace machine): a rate far above that means the
        # timing did not wait for the copy, and the load time proves nothing.
        rate = num(b, "slot_load_gb_per_s")
        plausible = rate is not None and rate <= 500
        if m == "8b":
            v = num(b, "slot_load_ms")
            check("8b host -> slot load ms (r16 adapter)", v, "<= 10", plausible and v is not None and v <= 10,
                  f"{(num(b, 'adapter_bytes') or 0) / 1e6:.1f} MB at {rate} GB/s"
                  + ("" if plausible else ": faster than any host link, the copy was not waited for"))
    if "missing" in logits:
        check("logits vs transformers+peft", logits["missing"], "ran", False)
    else:
        cmp = logits.get("comparisons", {})
        for which in ("base", "adapter"):
            c = cmp.get(f"loraplex_cuda_vs_ref_{which}", {})
            check(f"1b logits cuda vs HF ({which}) rel err", c.get("rel_err"), "<= 1e-2",
                  c.get("pass", False),
                  f"top-1 agree {c.get('top1_agree')}, on clear margins {c.get('top1_agree_clear')}; "
                  + (logits.get("loraplex_cuda_error", "")[:300] or logits.get("error", "")[:300]))
    ours = bench.get("1b", {})
    if "missing" in peer or "error" in peer or "missing" in ours:
        check("peer ratio (1b, batch 64, 16 adapters)", peer.get("missing") or peer.get("error", "")[:300]
              or ours.get("missing"), ">= 5", False)
    else:
        B, G = ours.get("batch", 0), ours.get("gen", 0)
        pre, step_ms = num(ours, "prefill_s_mixed"), num(ours, "decode_step_ms_mixed")
        hf_e2e, hf_dec = num(peer, "tokens_per_s_end_to_end"), num(peer, "decode_tokens_per_s")
        same = (peer.get("batch") == B and peer.get("gen") == G and
                peer.get("prompt_len") == ours.get("prompt_len") and peer.get("adapters") == ours.get("lora_adapters"))
        ratio_e2e = ratio_dec = None
        if pre and step_ms and hf_e2e and hf_dec:
            # generate(max_new_tokens=G): one prefill (giving the first token) and G - 1 decode steps.
            ours_e2e = B * G / (pre + (G - 1) * step_ms / 1e3)
            ratio_e2e = ours_e2e / hf_e2e
            ratio_dec = (B / (step_ms / 1e3)) / hf_dec
        check("peer ratio end to end (loraplex / HF+peft, 1b, 64 over 16 adapters)", ratio_e2e, ">= 5 (goal)",
              same and ratio_e2e is not None and ratio_e2e >= 5,
              f"decode-only ratio {ratio_dec}; same workload: {same}")

    failed_steps = [s["name"] for s in steps if s["status"] != "ok"]
    summary = {
        "gpu": gpu,
        "no_gpu": no_gpu,
        "seconds": a.seconds,
        "pass": not failed_steps and all(c["pass"] for c in checks),
        "failed_steps": failed_steps,
        "checks": checks,
        "steps": steps,
        "gpu_tests": tests,
        "bench": bench,
        "logits": logits,
        "peer": peer,
    }
    with open(a.out, "w") as f:
        json.dump(summary, f, indent=2)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return " ".join(str(v).split())[:60]

    print(f"device check on {gpu}: {'PASS' if summary['pass'] else 'FAIL'} in {a.seconds:.0f} s "
          f"({len(steps)} steps, failed: {', '.join(failed_steps) or 'none'})")
    print(f"{'check':58} {'value':>24}  {'goal':>14}  ok")
    for c in checks:
        print(f"{c['name'][:58]:58} {fmt(c['value']):>24}  {c['goal']:>14}  {'yes' if c['pass'] else 'NO'}")
    for m, b in bench.items():
        if "missing" not in b:
            print(f"{m}: d2d {fmt(num(b, 'd2d_bandwidth_gb_per_s'))} GB/s, GEMM {fmt(num(b, 'gemm_bf16_tflops'))} "
                  f"TFLOP/s, decode b1 {fmt(num(b, 'decode_b1_tokens_per_s'))} tok/s, b64 "
                  f"{fmt(num(b, 'decode_tokens_per_s'))} tok/s, prefill {fmt(num(b, 'prefill_tokens_per_s'))} tok/s "
                  f"= {fmt(num(b, 'prefill_fraction_of_gemm'))} of GEMM")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
