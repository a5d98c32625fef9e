"""OUTPUT_DIR/mlperf.log: the run in MLPerf Training's ``:::MLLOG`` format, written with the
mlperf-logging package's ``mllog`` on rank 0, so its time-to-train (run_start to run_stop)
can be held against MLPerf results and checked by MLPerf's compliance checker
(docs/mlperf_log.md says which checks a toy run cannot pass, and why).

The trainer makes one call per event; this module knows which MLPerf keys each one writes::

    MLPerfLog(...)     init_start and the submission fields (a fresh run)
    run_start()        the run's facts (batch, optimizer and its hyper-parameters, samples,
                       seed), init_stop, run_start, the first block_start and epoch_start
    epoch_stop()       epoch_stop of the epoch just completed
    eval_start()       eval_start
    eval_stop()        eval_stop, eval_accuracy, block_stop
    next_update()      what the next update begins: a stage's new global_batch_size (and any
                       hyper-parameter it changes), a block_start, an epoch_start
    run_stop()         run_stop: "success" if an evaluation reached mlperf.target_top1

Epochs are numbered from 1 (epoch_stop 3 ends the third epoch); eval_accuracy's epoch_num is
the number of epochs completed. Every line carries ``step`` (updates completed) in its
metadata, which is how a resume keeps the file coherent: it cuts mlperf.log back to the lines
of steps up to the checkpoint's, as log.jsonl is cut, drops a run_stop (a stopped run goes on)
and a line the killed process left half-written, and appends. Everything the trainer writes
for a step comes before that step's checkpoint, so the cut never splits an interval that the
resumed process would not close. One run_start and one run_stop across any number of resumes;
run_stop - run_start then includes the time between the jobs.
"""
import json
import logging
import math
import os
import sys

from mlperf_logging.mllog import mllog
from mlperf_logging.mllog import constants as K

from .runlog import EvalResult, rewrite_lines

FILE = "mlperf.log"
TOKEN = ":::MLLOG "
HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(HERE))


def truncate(path, step):
    """Keep the lines of ``path`` up to update ``step``; drop run_stop lines and lines that do
    not parse (cut off by a kill). Returns the number of lines dropped."""
    def keep(line):
        try:
            record = json.loads(line[line.index(TOKEN) + len(TOKEN):])
            late = (record.get("metadata") or {}).get("step", 0) > step
        except (ValueError, AttributeError, TypeError):
            return None
        if late or record.get("key") == K.RUN_STOP:
            return None
        return line if line.endswith("\n") else line + "\n"

    return rewrite_lines(path, keep)


def next_eval_epoch(done, every, first, total):
    """The epoch (a count of epochs) of the first evaluation after ``done`` epochs."""
    first = every if first is None else first
    k = 0 if done + 1e-9 < first else math.floor((done - first) / every + 1e-9) + 1
    return min(first + k * every, total)


def _number(x):
    return int(x) if float(x).is_integer() else x


class MLPerfLog:
    def __init__(self, output_dir, cfg, world_size, enabled=True, resume_step=None):
        """A fresh run starts the file (init_start); ``resume_step`` cuts it back and goes on."""
        self.cfg, self.world_size = cfg, world_size
        self.enabled = enabled and cfg.mlperf.log
        self.resumed = resume_step is not None
        self.path = os.path.join(output_dir, FILE)
        self.dropped = 0
        if not self.enabled:
            return
        if self.resumed:
            self.dropped = truncate(self.path, resume_step)
        self._handler = logging.FileHandler(self.path, mode="a" if self.resumed else "w")
        logger = logging.getLogger(f"{__name__}.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(self._handler)
        self._mllog = mllog.MLLogger(logger=logger, root_dir=REPO)
        if not self.resumed:
            m = cfg.mlperf
            self._event(K.CACHE_CLEAR, False, 0)     # this trainer does not drop the page cache
            self._write("start", K.INIT_START, None, 0)
            for key, value in ((K.SUBMISSION_BENCHMARK, K.RESNET), (K.SUBMISSION_ORG, m.org),
                               (K.SUBMISSION_DIVISION, m.division),
                               (K.SUBMISSION_STATUS, m.status),
                               (K.SUBMISSION_PLATFORM, m.platform or
                                f"{world_size}x{cfg.device.upper()}")):
                self._event(key, value, 0)

    # --- writing ---------------------------------------------------------------------------
    def _write(self, kind, key, value, step, **metadata):
        if not self.enabled:
            return
        frame, inside = sys._getframe(1), 0     # report the first caller outside this module
        while frame.f_back and os.path.abspath(frame.f_code.co_filename) == HERE:
            frame, inside = frame.f_back, inside + 1
        getattr(self._mllog, kind)(key, value, metadata=dict(metadata, step=step),
                                   stack_offset=2 + inside)

    def _event(self, key, value, step, **metadata):
        self._write("event", key, value, step, **metadata)

    def _prefix(self):
        return "lars" if self.cfg.optim.optimizer == "lars" else "sgd"

    def _stage_facts(self, schedule, stage):
        """The keys whose values a stage of batch-size control may change."""
        hyper, p = schedule.hyper(stage), self._prefix()
        return {K.GLOBAL_BATCH_SIZE: stage.global_batch,
                K.GRADIENT_ACCUMULATION_STEPS: stage.accumulation,
                K.MODEL_BN_SPAN: stage.local_batch,
                f"{p}_opt_base_learning_rate": schedule.peak(stage),
                f"{p}_opt_momentum": hyper["momentum"],
                f"{p}_opt_weight_decay": hyper["weight_decay"]}

    def _optimizer_facts(self, schedule):
        o, p, first = self.cfg.optim, self._prefix(), schedule.plan.stages[0]
        facts = {K.OPT_NAME: K.LARS if p == "lars" else K.SGD,
                 ("lars_opt_learning_rate_warmup_epochs" if p == "lars"
                  else K.OPT_LR_WARMUP_EPOCHS): o.warmup_epochs,
                 f"{p}_opt_learning_rate_decay_steps":
                     schedule.total_steps - schedule.warmup_steps()}
        if p == "lars":
            facts[K.LARS_EPSILON] = o.lars_eps
        if o.decay in ("poly", "cosine"):       # a step decay has no end rate in MLPerf's terms
            facts[f"{p}_opt_end_learning_rate"] = schedule.end_rate(first)
        if o.decay == "poly":
            facts[f"{p}_opt_learning_rate_decay_poly_power"] = o.poly_power
        if o.decay == "step":
            facts[K.OPT_LR_DECAY_BOUNDARY_EPOCHS] = o.step_milestones
        return facts

    # --- the trainer's events ----------------------------------------------------------------
    def run_start(self, schedule, train_samples, eval_samples):
        """The run's facts, then init_stop and run_start (a resumed run has written them)."""
        self._schedule = schedule
        if self.resumed:
            return
        facts = {K.SEED: self.cfg.train.seed, K.TRAIN_SAMPLES: train_samples,
                 K.EVAL_SAMPLES: eval_samples,
                 **self._stage_facts(schedule, schedule.plan.stages[0]),
                 **self._optimizer_facts(schedule)}
        for key, value in facts.items():
            self._event(key, value, 0)
        self._write("end", K.INIT_STOP, None, 0)
        self._write("start", K.RUN_START, None, 0)
        self._block_start(0, 0.0)
        self._write("start", K.EPOCH_START, None, 0, epoch_num=1)

    def _block_start(self, step, epoch):
        done = math.floor(epoch + 1e-9)
        e = self.cfg.eval
        until = next_eval_epoch(done, e.every_epochs, e.first_epoch, self.cfg.train.epochs)
        self._write("start", K.BLOCK_START, None, step, first_epoch_num=done + 1,
                    epoch_count=_number(max(1, math.ceil(until - done - 1e-9))))

    def epoch_stop(self, step, epoch):
        self._write("end", K.EPOCH_STOP, None, step, epoch_num=math.floor(epoch + 1e-9))

    def eval_start(self, step, epoch):
        self._write("start", K.EVAL_START, None, step, epoch_num=math.floor(epoch + 1e-9))

    def eval_stop(self, step, epoch, top1):
        done = math.floor(epoch + 1e-9)
        self._write("end", K.EVAL_STOP, None, step, epoch_num=done)
        self._event(K.EVAL_ACCURACY, top1, step, epoch_num=done)
        self._write("end", K.BLOCK_STOP, None, step,
                    first_epoch_num=math.floor(self._previous_eval(done) + 1e-9) + 1)

    def _previous_eval(self, done):
        """The epoch of the evaluation before the one after ``done`` epochs (0: none)."""
        e, previous = self.cfg.eval, 0
        while True:                                   # evaluations are few: walk them
            later = next_eval_epoch(previous, e.every_epochs, e.first_epoch, self.cfg.train.epochs)
            if later >= done - 1e-9 or later <= previous:
                return previous
            previous = later

    def next_update(self, step, epoch_before, epoch_now, evaluated):
        """Before the checkpoint of ``step``: what update ``step + 1`` begins."""
        if step >= self._schedule.total_steps:
            return
        stage = self._schedule.stage(step)
        if step == stage.first_step and stage.index > 0:
            before = self._stage_facts(self._schedule, self._schedule.plan.stages[stage.index - 1])
            for key, value in self._stage_facts(self._schedule, stage).items():
                if value != before[key]:
                    self._event(key, value, step, stage=stage.index)
        if evaluated:
            self._block_start(step, epoch_now)
        if math.floor(epoch_now + 1e-9) > math.floor(epoch_before + 1e-9):
            self._write("start", K.EPOCH_START, None, step,
                        epoch_num=math.floor(epoch_now + 1e-9) + 1)

    def run_stop(self, step, trainer_status, evals):
        """``evals``: the run's evaluation history (runlog.EvalResult, oldest first)."""
        target = self.cfg.mlperf.target_top1
        reached = any(e.top1 is not None and e.top1 >= target
                      for e in (EvalResult(*row) for row in evals))
        self._write("end", K.RUN_STOP, None, step,
                    status=K.SUCCESS if reached else K.ABORTED, trainer_status=trainer_status)

    def close(self):
        if self.enabled:
            self._handler.close()
