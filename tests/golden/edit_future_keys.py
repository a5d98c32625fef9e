"""Derive tests/golden/future-keys from a real run by hand-chosen edits (see README.md here).

    python tests/golden/edit_future_keys.py tests/golden/batch16 tests/golden/future-keys

The trainer on `main` does not yet write the keys other branches are adding (a "stage" event,
a `comm` config section, `allreduce_s` and `data_wait_frac` on epoch lines, a resume), so this
run is the real batch16 log with those added by the edits below. Its numbers are not a
measurement; they exist to test that the report reads the keys.
"""
import json
import os
import sys

import yaml

ALLREDUCE_S = [0.05, 0.06, 0.07, 0.08, 0.09, 0.10]      # per epoch, seconds (made up)
DATA_WAIT_FRAC = [0.02, 0.04, 0.06, 0.08, 0.10, 0.12]   # per epoch, fraction (made up)
STAGE_STEP = 45          # batch-size control: 16 -> 32 after the epoch-3 evaluation
CRASH_AFTER_STEP = 50    # the first run logs step 50, crashes, resumes from step 45
COMM = {"algorithm": "torus2d", "grid": [2, 1]}
CORE = ("event", "epoch", "step", "elapsed_s", "train_loss", "val_top1", "val_top5",
        "global_batch", "lr", "images_per_s")


def line(event, **fields):
    record = {k: None for k in CORE}
    record.update(fields, event=event)
    return record


def main(src, dst):
    with open(os.path.join(src, "log.jsonl")) as f:
        records = [json.loads(x) for x in f]
    out = []
    epoch_i = 0
    for r in records:
        r = dict(r)
        after_stage = r["step"] > STAGE_STEP
        if r["event"] == "start":
            r["world_size"] = 2
            r["config"]["comm"] = COMM
        if after_stage:                  # twice the batch in the same seconds per step
            r["global_batch"] = 32
            if r["images_per_s"] is not None:
                r["images_per_s"] = round(2 * r["images_per_s"], 6)
        if r["event"] == "epoch":
            del r["data_wait_s"]
            r["allreduce_s"] = ALLREDUCE_S[epoch_i]
            r["data_wait_frac"] = DATA_WAIT_FRAC[epoch_i]
            epoch_i += 1
        if r["event"] == "step" and r["step"] == CRASH_AFTER_STEP:
            # The first attempt's step-50 line: its loss is a sentinel (99.0) that must not
            # reach any table, plot or series, because the resumed run redoes steps 46-50.
            crashed = dict(r, train_loss=99.0)
            out.append(crashed)
            resume_from = next(x for x in out if x["event"] == "eval" and x["step"] == 45)
            out.append(line("resume", epoch=resume_from["epoch"], step=STAGE_STEP,
                            elapsed_s=resume_from["elapsed_s"], global_batch=32,
                            lr=resume_from["lr"], checkpoint="checkpoint_step45.h5"))
        out.append(r)
        if r["event"] == "start":
            out.append(line("stage", epoch=0.0, step=0, elapsed_s=0.0, global_batch=16,
                            stage=0, local_batch=8, accumulation=1))
        if r["event"] == "eval" and r["step"] == STAGE_STEP:
            out.append(line("checkpoint", epoch=r["epoch"], step=r["step"],
                            elapsed_s=r["elapsed_s"], global_batch=16, lr=r["lr"],
                            path="checkpoint_step45.h5"))       # an event the report ignores
            out.append(line("stage", epoch=r["epoch"], step=r["step"], elapsed_s=r["elapsed_s"],
                            global_batch=32, stage=1, local_batch=16, accumulation=1))
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "log.jsonl"), "w") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(src, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["comm"] = COMM
    with open(os.path.join(dst, "config.yaml"), "w") as f:
        f.write(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
    with open(os.path.join(src, "summary.json")) as f:
        summary = json.load(f)
    summary.update(world_size=2, global_batch=32)
    with open(os.path.join(dst, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
