"""The training run: its parts built once, one update per ``train_step``, the loop in
``train``, and what is due after each update decided by the schedule's Clock.

    trainer = Trainer(cfg, runtime, plan, output_dir, argv)     # model, graphs, optimizer
    trainer.start()            # fresh (rank 0's weights everywhere) or from the checkpoint
    result = trainer.train()   # RunResult: the step reached, the status
"""
import math
import os
import platform
import subprocess
import sys
from typing import NamedTuple, Optional

import nnabla as nn
import numpy as np

from data.build import build_loaders
from data.imagefolder import DataError
from models.resnet import ResNet, count_parameters
from schedules.clock import Clock

from . import loss_scaling, run_state
from .config import dump_yaml, to_dict
from .device import Exchange, LossSum, backward
from .evaluate import average_bn_statistics, evaluate
from .graphs import TrainGraphs, build_val_graph
from .meters import Meters
from .mlperf_log import MLPerfLog
from .optim import Optimizer
from .recorder import Recorder
from .runlog import RunLog, truncate_log
from .runtime import StartError
from .signals import StopRequest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StepResult(NamedTuple):
    loss: float                   # the mean over ranks and micro-batches
    stop: bool                    # some rank was asked to stop (a signal)
    diverged: Optional[str]       # why the run cannot go on, or None


class RunResult(NamedTuple):
    step: int                     # updates done
    stage: object                 # the batch stage of the last update (None: none ran)
    lr: float
    status: str                   # completed | stopped | diverged: ...
    signal_name: Optional[str]    # the stop signal, for status stopped


def git_commit():
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_model(cfg, schedule, ctx, float_ctx):
    """(model, graphs, val_net): one graph per per-rank batch size, sharing the weights."""
    nn.set_default_context(ctx)      # a dry run builds the graph on the CPU, computes nothing
    model = ResNet(cfg.model.depth, cfg.model.num_classes, cfg.model.width, cfg.model.small_stem,
                   cfg.model.zero_init_last_bn, cfg.model.channel_last,
                   rng=np.random.RandomState(cfg.train.seed))
    graphs = TrainGraphs(cfg, model, schedule, loss_ctx=float_ctx)   # the loss in float
    graphs.for_stage(schedule.stage(0))
    return model, graphs, build_val_graph(cfg, model)


class Trainer:
    def __init__(self, cfg, runtime, plan, output_dir, param_digest=False):
        self.cfg, self.runtime, self.comm = cfg, runtime, runtime.comm
        self.schedule, self.resume, self.output_dir = plan.schedule, plan.resume, output_dir
        self.train_set, self.val_set = plan.listing
        self.rank0, self.param_digest = self.comm.rank == 0, param_digest
        # MLPerf's init_start (a resumed run cuts the file back instead)
        self.mlperf = MLPerfLog(output_dir, cfg, self.comm.size, enabled=self.rank0,
                                resume_step=plan.resume.meta["step"] if plan.resume else None)
        model, self.graphs, self.val_net = build_model(cfg, self.schedule, runtime.ctx,
                                                       runtime.float_ctx)
        self.params, self.statistics = model.parameters(), model.statistics()
        self.n_params = count_parameters(self.params)
        f = runtime.float_ctx
        o = cfg.optim
        self.optimizer = Optimizer(self.params, o.momentum, o.weight_decay, o.optimizer,
                                   o.lars_coefficient, o.lars_eps, f)
        self.all_params = {**self.params, **self.statistics}
        self.exchange = Exchange(self.comm, self.params, cfg.comm.backward_callback, f)
        self.half = cfg.type_config == "half"
        self.loss_sum = LossSum(f)
        self.probe = self.optimizer.grads_probe(f) if self.half else None
        # FP32 has no loss scale (None): its updates are never skipped
        self.scale = loss_scaling.LossScale(cfg.loss_scale.initial) if self.half else None
        self.clock = Clock.from_config(cfg, self.schedule)
        self.step, self.meta = 0, None

    def say(self, *args):
        if self.rank0:
            print(*args)

    # --- start ------------------------------------------------------------------------------
    def start(self):
        """Fresh: rank 0's weights everywhere. Resumed: the checkpoint's state, checked to be
        the same step on every rank. Then loaders, config.yaml, log and the first line."""
        if self.resume is not None:
            self._restore()
        else:
            self.comm.bcast(self.exchange.arrays(self.all_params.values(), grad=False), root=0)
        cfg, comm, meta = self.cfg, self.comm, self.meta
        try:
            self.loader, self.val_loader = build_loaders(
                cfg.data, self.train_set, self.val_set, seed=cfg.train.seed,
                val_batch_size=cfg.eval.batch_size, shard_id=comm.rank, num_shards=comm.size,
                channel_last=cfg.model.channel_last, half=self.half, device_id=comm.local_rank,
                state=meta and meta["stream"], ranks_per_node=comm.local_size)
        except DataError as e:      # e.g. data.shuffle=node on a node that lacks its shards
            raise StartError(str(e)) from None
        if self.rank0:
            path = os.path.join(self.output_dir, "config.yaml")
            with open(path + ".tmp", "w") as f:
                f.write(dump_yaml(cfg))
            os.replace(path + ".tmp", path)
        self.log = RunLog(self.output_dir, enabled=self.rank0,
                          thresholds=cfg.eval.top1_thresholds, append=meta is not None,
                          evals=meta["evals"] if meta else (), tensorboard=cfg.train.tensorboard)
        self.meters = Meters(**(meta["meters"] if meta else {}))   # the clock starts here
        self._first_line()
        self.mlperf.run_start(self.schedule, len(self.train_set), len(self.val_set))
        self.stop = StopRequest()     # from here a stop signal checkpoints and ends the run
        self.recorder = Recorder(self.log, self.mlperf, self.meters, self.schedule.total_steps,
                                 self.step, self.rank0)

    def _restore(self):
        self.step, self.meta = run_state.restore(self.resume, self.all_params, self.optimizer,
                                                 self.schedule)
        step, meta = self.step, self.meta
        if not run_state.same_on_every_rank(self.comm, step):
            raise StartError(f"ranks found different checkpoints (rank {self.comm.rank}: step "
                             f"{step}): is {self.output_dir} on a file system every node sees?")
        if self.half and meta.get("loss_scale"):
            self.scale = loss_scaling.LossScale(*meta["loss_scale"])
        if self.rank0:
            dropped = truncate_log(os.path.join(self.output_dir, "log.jsonl"), step)
            self.say(f"resume: step {step} of {self.schedule.total_steps} from "
                     f"{self.resume.path}"
                     + (f" ({dropped} log lines after it dropped, {self.mlperf.dropped} of "
                        "mlperf.log)" if dropped or self.mlperf.dropped else ""))
            changed = run_state.changed_settings(meta, self.cfg)
            if changed:
                self.say("resume: warning: settings changed since the checkpoint: "
                         f"{', '.join(changed)}")

    def _first_line(self):
        comm, schedule = self.comm, self.schedule
        fields = dict(world_size=comm.size, parameters=self.n_params,
                      total_steps=schedule.total_steps, comm_algorithm=comm.algorithm,
                      comm_grid=f"{comm.grid[0]}x{comm.grid[1]}", argv=sys.argv[1:],
                      host=platform.node(), commit=git_commit(), rehearsal=self.runtime.rehearse)
        if self.meta is None:
            self.log.write("start", epoch=0.0, step=0, elapsed_s=0.0,
                           global_batch=schedule.stage(0).global_batch, schedule=schedule.rows(),
                           train_images=len(self.train_set), val_images=len(self.val_set),
                           excluded_images=self.train_set.excluded + self.val_set.excluded,
                           config=to_dict(self.cfg), nnabla=nn.__version__,
                           python=platform.python_version(), **fields)
        else:
            self.log.write("resume", epoch=self.loader.epochs_done, step=self.step,
                           elapsed_s=self.meters.elapsed(),
                           global_batch=schedule.stage(self.step).global_batch,
                           checkpoint=self.resume.path, **fields)

    # --- the loop -----------------------------------------------------------------------------
    def train(self):
        """One update per iteration until the schedule ends, a stop request, or divergence."""
        schedule, step, stage = self.schedule, self.step, None
        status, lr = "completed", schedule.lr_at_step(step)
        while step < schedule.total_steps:
            if stage is None or step == stage.end_step:    # switch batch and hypers
                stage, train_net = self.enter_stage(step)
            epoch_before, lr = self.loader.epochs_done, schedule.lr_at_step(step)
            result = self.train_step(train_net, stage, lr, step)
            if result.diverged:
                status = result.diverged
                break
            step += 1
            self.meters.update(result.loss, stage.global_batch)
            self.after_update(step, stage, lr, epoch_before, result.stop)
            if result.stop:
                status = "stopped"
                break
        self.recorder.close()
        self.loader.close()
        return RunResult(step, stage, lr, status,
                         self.stop.signal_name if status == "stopped" else None)

    def enter_stage(self, step):
        """A stage begins: its graph, the optimizer's hypers, a stage line."""
        stage = self.schedule.stage(step)
        hyper = self.schedule.hyper(stage)
        train_net = self.graphs.for_stage(stage)
        self.optimizer.configure(hyper["momentum"], hyper["weight_decay"])
        self.recorder.stage(stage, step, self.loader.epochs_done, self.schedule.lr_at_step(step),
                            hyper, first=step == stage.first_step)
        return stage, train_net

    def train_step(self, net, stage, lr, step):
        """One update: ``accumulation`` forward/backward passes (gradients add up in place),
        the exchange, then the update, or in FP16 the skipped one that lowers the scale."""
        self.optimizer.zero_grad()
        self.loss_sum.reset()
        overlap = self.exchange.backward_callback(stage.accumulation)   # native NCCL only
        for _ in range(stage.accumulation):
            with self.meters.timing("data"):
                self.next_batch(net, stage.local_batch)
            net.loss.forward(clear_no_need_grad=True)
            backward(net.loss, self.scale.scale if self.half else 1.0, overlap)
            self.loss_sum.add(net.loss)       # on the device: no host read per micro-batch
        # The gradients' all-reduce, then the update's one host read (the loss, and in half
        # whether every reduced gradient is finite), then one small full-precision exchange
        # of every rank's loss and any stop request, so all ranks see the same mean loss and
        # stop after the same step. In float a non-finite gradient shows in the loss (the
        # next one at the latest), so only half checks the gradients, where overflow is routine.
        with self.meters.timing("allreduce"):
            loss, stop_now, grads_ok = self.exchange(
                self.loss_sum.total, self.stop.requested, grads_done=overlap is not None,
                probe=self.probe)
        loss /= stage.accumulation
        return StepResult(loss, stop_now, self.update(loss, grads_ok, stage, lr, step))

    def next_batch(self, net, batch):
        if self.cfg.data.device == "gpu":     # DALI writes into the arrays on the GPU
            self.loader.next_batch_into(net.image.data, net.label.data, batch, self.runtime.ctx)
        else:
            net.image.d, net.label.d = self.loader.next_batch(batch)

    def update(self, loss, grads_ok, stage, lr, step):
        """Apply the update; returns why the run diverged, or None."""
        finite = math.isfinite(loss) and grads_ok
        if self.half:     # FP16: an overflow skips the update and lowers the scale
            grad_scale = self.scale.scale
            self.scale, apply = loss_scaling.update(self.scale, not finite,
                                                    self.cfg.loss_scale.growth_interval)
            if apply:
                self.optimizer.scale_grad(1.0 / (grad_scale * stage.accumulation))
                self.optimizer.step(lr)
            else:
                self.meters.skipped_updates += 1
            if not apply and self.scale.scale <= 1.0 and not math.isfinite(loss):
                return f"diverged: loss {loss} at step {step + 1} with the loss scale at 1"
            return None
        if not finite:
            what = f"loss {loss}" if not math.isfinite(loss) else "gradients not finite"
            return f"diverged: {what} at step {step + 1} (lr {lr:.4g})"
        if stage.accumulation > 1:
            self.optimizer.scale_grad(1.0 / stage.accumulation)  # the mean over micro-steps
        self.optimizer.step(lr)
        return None

    def after_update(self, step, stage, lr, epoch_before, stop_now):
        """Log, evaluate, checkpoint, in that order: a checkpoint covers the lines."""
        events, epoch_now = self.clock.events(step), self.loader.epochs_done
        self.recorder.update(step, epoch_now, stage, lr, events,
                             self.scale.scale if self.half else None)
        if events.evaluate:
            self.recorder.eval_start(step, epoch_now)
            with self.meters.timing("eval"):
                top1, top5, val_loss = self.evaluate()
            self.recorder.evaluated(step, epoch_now, stage, lr, top1, top5, val_loss)
        self.recorder.next_update(step, epoch_before, epoch_now, events.evaluate)
        if events.checkpoint or stop_now:
            self.save_checkpoint(step)

    def evaluate(self):
        """(top-1, top-5, loss) on the validation set, with BN statistics averaged first."""
        average_bn_statistics(self.comm, self.exchange.arrays(self.statistics.values(),
                                                              grad=False))
        ctx = self.runtime.ctx if self.cfg.data.device == "gpu" else None
        return evaluate(self.val_net, self.val_loader, self.comm, ctx)

    def save_checkpoint(self, step):
        """Every rank takes part (BN statistics are averaged first); rank 0 writes."""
        average_bn_statistics(self.comm, self.exchange.arrays(self.statistics.values(),
                                                              grad=False))
        if self.rank0:
            meta = run_state.make_meta(self.cfg, self.comm.size, self.loader.state(),
                                       self.meters, self.log.evals, self.scale,
                                       run_state.data_identity(self.train_set))
            run_state.save(self.output_dir, step, self.all_params, self.optimizer, meta,
                           keep=self.cfg.checkpoint.keep)
