"""Where the numbers live: CPU or GPU contexts, and the arrays a communicator works on.

NOT VERIFIED ON A GPU: the GPU branches follow nnabla-ext-cuda 1.39.0's source
(``get_extension_context('cudnn', device_id, type_config)``, ``NdArray`` collectives,
``all_reduce_callback``), share every decision with the CPU path the tests run, and are
rehearsed on CPU ranks (``--rehearse-gpu``, rehearsal/); no GPU has run them in this
project. ``check_gpu_stack`` runs anywhere: it names what is missing.

The rules both paths follow:
  - the model computes in ``type_config`` (half: FP16 forward/backward) and the loss in float;
  - each update exchanges the gradients (in the compute precision, or comm.wire_dtype on
    MPI), then a 2-element control array ``[this rank's loss, stop request]`` in full
    precision, so every rank learns the exact mean loss and any stop request at the same
    step (MPI: numpy views of the buffers; NCCL: NdArrays, the control over the host);
  - with ``comm.backward_callback: true`` (``comm.algorithm: native`` on NCCL, one
    micro-batch per update), nnabla's ``all_reduce_callback`` reduces the gradients during
    backward and only the control array is exchanged after it. Off by default: it runs a
    blocking host MPI_Allreduce per gradient, and nobody has measured it against the plain
    all-reduce on a GPU.
"""
import ctypes
import os

import numpy as np
import nnabla as nn
from nnabla._variable import CommunicatorBackwardCallback
from nnabla.ext_utils import get_extension_context

# The install step every missing piece of the GPU stack points to.
INSTALL = "GPU=1 make setup (requirements-gpu.txt), then source .venv/bin/gpu_env.sh"


def _loads(*names):
    return _library(*names) is not None


def check_gpu_stack(multi_rank):
    """One line per missing piece of the GPU stack (empty: all there), before any work."""
    problems = []
    try:
        import nnabla_ext.cuda  # noqa: F401
    except ImportError as e:
        if "No module named" in str(e):
            problems.append(f"nnabla-ext-cuda is not installed (no nnabla_ext.cuda): {INSTALL}")
        elif "libcuda.so" in str(e):
            problems.append("nnabla_ext.cuda does not load: no NVIDIA driver (libcuda.so.1 comes "
                            "with the GPU driver, not with any pip package); on a machine "
                            "without a GPU, rehearse the GPU path with --rehearse-gpu")
        else:
            problems.append(f"nnabla_ext.cuda does not load ({e}): the CUDA 12 runtime "
                            "libraries are not on the library path: module load cuda/12.x, "
                            "or where there is no CUDA module " + INSTALL + " (it then "
                            "installs them from PyPI)")
    else:
        problems += _cuda_initialised(nnabla_ext.cuda)
    if not _loads("libcudnn.so.8"):
        problems.append("libcudnn.so.8 (cuDNN 8, which nnabla-ext-cuda120 1.39 links) is not "
                        f"loadable: {INSTALL} (installs nvidia-cudnn-cu12 8.9 and puts it on "
                        "LD_LIBRARY_PATH)")
    if multi_rank:
        nccl_home = os.environ.get("NCCL_HOME")
        if not _loads(nccl_home and os.path.join(nccl_home, "lib", "libnccl.so"),
                      nccl_home and os.path.join(nccl_home, "lib", "libnccl.so.2"),
                      "libnccl.so.2", "libnccl.so"):
            problems.append("NCCL (libnccl.so.2) is not loadable for nnabla's communicator: "
                            f"{INSTALL} (sets NCCL_HOME), or module load nccl")
        ompi_home = os.environ.get("OMPI_HOME")
        libmpi = _library(ompi_home and os.path.join(ompi_home, "lib", "libmpi.so"),
                          "libmpi.so")
        if libmpi is None:
            problems.append("Open MPI's libmpi.so is not loadable for nnabla's communicator "
                            "(it dlopens $OMPI_HOME/lib/libmpi.so): source .venv/bin/gpu_env.sh "
                            "(sets OMPI_HOME), or export OMPI_HOME=<Open MPI or HPC-X ompi dir>")
        elif not hasattr(libmpi, "ompi_mpi_comm_world"):
            problems.append(f"{libmpi._name} is not Open MPI (no ompi_mpi_comm_world): nnabla's "
                            "communicator needs Open MPI or HPC-X (not Intel MPI or MPICH); "
                            "export OMPI_HOME=<Open MPI or HPC-X ompi dir>")
    return problems


def _library(*names):
    """The first of ``names`` that loads, as a ctypes library, or None."""
    for name in names:
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    return None


def _cuda_initialised(cuda):
    """nnabla-ext-cuda logs a failed CUDA initialisation and imports anyway (init.pyx):
    then no array class is registered and the first context fails obscurely."""
    try:
        ready = bool(cuda.array_classes()) and cuda.get_device_count() > 0
    except Exception as e:      # the extension raises its own types here
        return [f"CUDA does not initialise ({type(e).__name__}: {e}): check the driver "
                "(nvidia-smi) and that the job was given GPUs (CUDA_VISIBLE_DEVICES)"]
    if ready:
        return []
    return ["CUDA did not initialise (nnabla-ext-cuda registered no GPU arrays, or no GPU is "
            "visible): check nvidia-smi, the driver's version (>= 525.60 for CUDA 12) and "
            "CUDA_VISIBLE_DEVICES (empty when the job asked for no GPUs)"]


# Ranks on this node as launchers export them (Open MPI, MPICH/Intel MPI, Slurm).
LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")


def check_devices(environ=None, count=None):
    """None, or one line if this node shows fewer GPUs than it runs ranks: nnabla's NCCL
    set-up calls cudaSetDevice(local rank) first, and the ranks without a GPU would fail
    while the others wait in ncclCommInitRank, which has no timeout."""
    environ = os.environ if environ is None else environ
    local = next((int(environ[v]) for v in LOCAL_SIZE_VARS
                  if environ.get(v, "").strip().isdigit()), None)
    if local is None:
        return None
    count = device_count() if count is None else count
    if count >= local:
        return None
    hidden = environ.get("CUDA_VISIBLE_DEVICES")
    return (f"this node runs {local} ranks but shows {count} GPU(s)"
            + (f" (CUDA_VISIBLE_DEVICES={hidden})" if hidden is not None else "")
            + ": one rank per GPU; start fewer ranks per node (mpirun --map-by ppr:"
            f"{max(count, 1)}:node) or let every rank see the node's GPUs")


def contexts(device, type_config, device_id=0):
    """(compute context, float context for the loss)."""
    if device == "cpu":
        return (get_extension_context("cpu", type_config=type_config),
                get_extension_context("cpu", type_config="float"))
    return (get_extension_context("cudnn", device_id=str(device_id), type_config=type_config),
            get_extension_context("cudnn", device_id=str(device_id), type_config="float"))


def device_count():
    import nnabla_ext.cuda
    return nnabla_ext.cuda.get_device_count()


def backward(loss, grad, callback=None):
    """``loss.backward(grad, clear_buffer=True)``, with ``callback`` (Exchange.backward_callback)
    reducing gradients during it. nnabla's graph calls a communicator callback's
    ``on_finish_function_backward(f)`` after each function and ``on_finish_backward()`` at
    the end (computation_graph/variable.cpp); a Python callback (rehearsal/'s double) cannot
    enter that C++ list, so it gets the same two calls: the first as function_post_hook."""
    if callback is None or isinstance(callback, CommunicatorBackwardCallback):
        loss.backward(grad, clear_buffer=True, communicator_callbacks=callback)
        return
    loss.backward(grad, clear_buffer=True, function_post_hook=callback.on_finish_function_backward)
    callback.on_finish_backward()


def reduces_during_backward(backward_callback, backend, algorithm, accumulation, world_size):
    """The one case in which the trainer reduces gradients during backward (so communication
    overlaps it): comm.backward_callback on the NCCL backend with algorithm native, one
    micro-batch per update, more than one rank. Every other exchange runs after backward.
    scale_model's trainer_uses_callback states the same (tests/test_dry_run_overlap.py)."""
    return bool(backward_callback and backend == "nccl" and algorithm == "native"
                and accumulation == 1 and world_size > 1)


class Exchange:
    """The update's collectives: the gradients (mean over ranks), then the control array."""

    def __init__(self, comm, params, backward_callback=False, float_ctx=None):
        self.comm = comm
        self.float_ctx = float_ctx or nn.get_current_context()
        self.params = params
        self.on_device = getattr(comm, "backend", "mpi") == "nccl"
        self.use_callback = backward_callback
        self.control = np.zeros(2, np.float64)

    def arrays(self, variables, grad):
        """What the communicator reduces: numpy views (MPI, CPU) or NdArrays (NCCL); none
        for a single process (on a GPU a numpy view would copy the array to the host)."""
        if self.comm.size == 1:
            return []
        if self.on_device:
            return [v.grad if grad else v.data for v in variables]
        return [v.g if grad else v.d for v in variables]

    def backward_callback(self, accumulation):
        """nnabla's all_reduce_callback (for ``backward``) when comm.backward_callback asks
        for it on native NCCL with one micro-batch, else None."""
        if not reduces_during_backward(self.use_callback, "nccl" if self.on_device else "mpi",
                                       self.comm.algorithm, accumulation, self.comm.size):
            return None
        return self.comm.backward_callback(self.arrays(self.params.values(), grad=True))

    def __call__(self, loss_sum, stop_requested, grads_done=False, probe=None):
        """All-reduce (mean) the gradients, then read this rank's loss once and exchange it.

        ``loss_sum``: this rank's micro-batch losses summed where they were computed (an
        NdArray, ``LossSum``); ``probe``: a callable giving a device scalar that is not finite when
        a reduced gradient is not (half precision), or None. The gradients are
        enqueued first and the one host read of the update comes after them (on a GPU the
        host then has nothing left to hand the device). Returns (mean loss sum over ranks,
        any rank asked to stop, gradients finite)."""
        import nnabla.functions as F
        device_comm = self.on_device and self.comm.size > 1
        if self.comm.size > 1 and not grads_done:
            grads = self.arrays(self.params.values(), grad=True)
            self.comm.all_reduce(grads, average=True, **({"wait": False} if device_comm else {}))
        if device_comm:
            self.comm.wait()         # under comm's watchdog; the double shows results here
        status = loss_sum
        if probe is not None:
            with nn.context_scope(self.float_ctx):
                status = F.concatenate(F.reshape(loss_sum, (1,)), F.reshape(probe(), (1,)))
        host = (self.comm.read(status) if device_comm else np.array(status.data, copy=True))
        host = host.reshape(-1)
        finite = probe is None or bool(np.isfinite(host[1]))
        self.control[:] = (float(host[0]), float(stop_requested))
        if self.comm.size == 1:     # nothing to exchange
            return float(host[0]), bool(stop_requested), finite
        self.comm.all_reduce([self.control], average=True, full_precision=True)
        return float(self.control[0]), bool(self.control[1] > 0), finite


class LossSum:
    """This update's loss summed over its micro-batches on the loss's own device (float):
    one device add per micro-batch and no host read; Exchange reads it once."""

    def __init__(self, float_ctx):
        self.float_ctx = float_ctx
        self.total = None

    def reset(self):
        self.total = None

    def add(self, loss):
        """``loss``: the loss Variable after forward (its array is reused by the next one)."""
        import nnabla.functions as F
        with nn.context_scope(self.float_ctx):
            self.total = (F.identity(loss.data) if self.total is None
                          else F.add2(self.total, loss.data))
