#!/usr/bin/env bash
# Issue 15, item 3: does the motif grammar make the model propose the laws of science more often?
# Run from the repository root:
#   bash bench/motif_ab.sh                  # the real A/B: two 25-minute fine-tunes, then the ablations
#   TOY=1 bash bench/motif_ab.sh            # the same path at toy size (about a minute), to test the script
#
# 1. Fine-tunes $INIT for the same wall-clock time on the old grammar (data_gen/grammars/default.toml) and on
#    the motif grammar (data_gen/grammars/motifs.toml), side by side (same seed, same preset, same number
#    of generator workers each), so both share the machine alike.
# 2. Runs the transformer-only ablation (bench/odebench.py --quick --ablation: transformer,
#    transformer+refit and hybrid rows) of both checkpoints on the ODEBench quick set, the forced set and
#    the in-distribution set of the old grammar.
# 3. Prints the A/B table and the decision rule of issue 15: the motif grammar becomes the default only if
#    the transformer+refit sum of reconstruction and generalisation accuracy over both quick settings is
#    higher on ODEBench and on the forced set, and the in-distribution set loses at most one system (in any
#    setting and measure). Results go to $OUT/results/*.json and $OUT/ab.md.
# Nothing here reads the benchmark files except bench/odebench.py's scoring; the grammars never do.
set -euo pipefail
TOY=${TOY:-0}
OUT=${OUT:-out/motif-ab}
SEED=${SEED:-11}
OLD=${OLD:-data_gen/grammars/default.toml}
NEW=${NEW:-data_gen/grammars/motifs.toml}
if [ "$TOY" = 1 ]; then
    OUT=${OUT%/}-toy
    MINUTES=${MINUTES:-0.1}
    INIT=${INIT:-tests/data/test_checkpoint}
    PRESET=${PRESET:-test}
    SUITES=${SUITES:-forced}
    BENCH_ARGS=${BENCH_ARGS:---beam-size 2 --time-budget 0.3}
    TRAIN_EXTRA=(--set eval_systems=4 --set eval_interval=0)
else
    MINUTES=${MINUTES:-25}
    INIT=${INIT:-checkpoints/tiny}
    PRESET=${PRESET:-tiny}
    SUITES=${SUITES:-odebench forced indist}
    BENCH_ARGS=${BENCH_ARGS:-}
    TRAIN_EXTRA=()
fi
TRAIN_WORKERS=${TRAIN_WORKERS:-1}
BENCH_WORKERS=${BENCH_WORKERS:-2}
export PYTHONPATH=${PYTHONPATH:-.}
PY=${PYTHON:-python}
mkdir -p "$OUT/results"
SECONDS_LIMIT=$("$PY" -c "print(int(float('$MINUTES') * 60))")
echo "A/B: $INIT fine-tuned for $MINUTES min on $OLD (old) and on $NEW (new), seed $SEED, preset $PRESET -> $OUT"

if [ "${SKIP_TRAIN:-0}" != 1 ]; then
    pids=()
    for arm in old new; do
        grammar=$OLD; [ "$arm" = new ] && grammar=$NEW
        "$PY" -m odeformer.train --preset "$PRESET" --init "$INIT" --grammar "$grammar" --out "$OUT/$arm" \
            --set max_time_s="$SECONDS_LIMIT" --set max_steps=100000000 --set seed="$SEED" \
            --set workers="$TRAIN_WORKERS" --set log="$OUT/$arm.jsonl" "${TRAIN_EXTRA[@]}" \
            >"$OUT/$arm.train.log" 2>&1 &
        pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    if [ "$status" != 0 ]; then tail -5 "$OUT"/*.train.log; echo "a fine-tune failed" >&2; exit 1; fi
    for arm in old new; do echo "$arm: $(tail -1 "$OUT/$arm.train.log")"; done
fi

for suite in $SUITES; do
    for arm in old new; do
        # shellcheck disable=SC2086
        "$PY" bench/odebench.py --suite "$suite" --quick --ablation --no-baseline --checkpoint "$OUT/$arm" \
            --workers "$BENCH_WORKERS" --out "$OUT/results/$suite-$arm.json" $BENCH_ARGS >"$OUT/$suite-$arm.bench.log" 2>&1 \
            || { tail -20 "$OUT/$suite-$arm.bench.log"; exit 1; }
    done
done

"$PY" - "$OUT" $SUITES <<'EOF'
import json
import sys
from pathlib import Path

out, suites = Path(sys.argv[1]), sys.argv[2:]
lines = ["| suite | variant | setting | old recon / gen | new recon / gen | new - old (systems) |",
         "|---|---|---|---|---|---|"]
verdict = {}
for suite in suites:
    old = json.loads((out / "results" / f"{suite}-old.json").read_text())["summary"]
    new = json.loads((out / "results" / f"{suite}-new.json").read_text())["summary"]
    sums, worst_loss = {"old": 0.0, "new": 0.0}, 0
    for key in old:
        variant, sigma, drop = key.split(" ")
        a, b = old[key]["all"], new[key]["all"]
        n = a["n"]
        d_rec = round((b["recon_acc"] - a["recon_acc"]) * n)
        d_gen = round((b["gen_acc"] - a["gen_acc"]) * n)
        lines.append(f"| {suite} | {variant} | {sigma}, {drop} | {a['recon_acc']:.2f} / {a['gen_acc']:.2f} | "
                     f"{b['recon_acc']:.2f} / {b['gen_acc']:.2f} | {d_rec:+d} / {d_gen:+d} |")
        if variant == "transformer+refit":
            sums["old"] += a["recon_acc"] + a["gen_acc"]
            sums["new"] += b["recon_acc"] + b["gen_acc"]
            worst_loss = max(worst_loss, -d_rec, -d_gen)
    verdict[suite] = (sums, worst_loss)
lines.append("")
for suite, (sums, loss) in verdict.items():
    lines.append(f"- {suite}: transformer+refit recon+gen summed over the settings: old {sums['old']:.2f}, "
                 f"new {sums['new']:.2f}; largest loss of the new grammar in one setting and measure: {loss} system(s)")
better = all(verdict[s][0]["new"] > verdict[s][0]["old"] for s in ("odebench", "forced") if s in verdict)
kept = "indist" not in verdict or verdict["indist"][1] <= 1
complete = {"odebench", "forced", "indist"} <= set(verdict)
if not complete:
    decision = "incomplete A/B (not every suite ran): no decision"
elif better and kept:
    decision = "the motif grammar wins: make it the default (data_gen/grammars/motifs.toml)"
else:
    decision = "the motif grammar does not win: the default grammar stays"
lines.append(f"\nDecision (issue 15 rule): {decision}")
for arm in ("old", "new"):
    log = out / f"{arm}.train.log"
    if log.exists():
        done = [ln for ln in log.read_text().splitlines() if ln.startswith("training done")]
        lines.append(f"- {arm} fine-tune: {done[-1] if done else 'no summary line'}")
text = "\n".join(lines)
print(text)
(out / "ab.md").write_text(text + "\n")
EOF
