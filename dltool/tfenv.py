"""TensorFlow start-up in dltool's processes: imported quietly, and sized to the Spark task it runs in.

Used by training workers, scoring and prediction tasks, the Spark session's warm-up, exports and tracking: a leaf
(standard library only at import) so that none of them imports another verb to start TensorFlow.
"""

from __future__ import annotations

import os
import sys


# What TensorFlow 2.21 writes to stderr on import, whatever TF_CPP_MIN_LOG_LEVEL says (before absl is set up).
_IMPORT_BANNER = ("absl::InitializeLog()", "oneDNN custom operations are on", "cpu_feature_guard.cc",
                  "To enable the following instructions")  # fmt: skip


# Libraries Keras imports when it loads, only for features dltool never uses (its scikit-learn wrappers,
# pandas inputs to fit, image-gallery plots): 2-3 s of every TensorFlow start when installed (MLflow brings
# scikit-learn). Keras takes each as optional, so they are held back while TensorFlow loads; code that
# imports them afterwards (a model factory) gets them as usual.
KERAS_EXTRAS = ("sklearn", "matplotlib", "pandas")


def import_tensorflow_quietly():
    """`import tensorflow`, keeping its start-up banner off the user's terminal; other output passes through.

    In local mode a Spark task's stderr is the user's terminal: every eval and predict task
    would print the oneDNN and CPU lines. They are written by C++ before logging is set up,
    so only a redirect of file descriptor 2 during the import holds them back. Keras's optional
    imports (KERAS_EXTRAS) are skipped.
    """
    import tempfile

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    held = [name for name in KERAS_EXTRAS if name not in sys.modules]
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys.modules.update(dict.fromkeys(held))  # None in sys.modules: `import name` raises ImportError
            import tensorflow as tf
        finally:
            for name in held:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().decode(errors="replace").splitlines()
    kept = [line for line in lines if line.strip() and not any(mark in line for mark in _IMPORT_BANNER)]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)
    return tf


def task_threads() -> int:
    """The CPUs of this Spark task (1 outside a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


def task_tensorflow():
    """TensorFlow for this Python worker, limited to the task's CPUs (set once: TF fixes threads at start)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = import_tensorflow_quietly()
    threads = task_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # a reused Python worker already started TensorFlow with these settings
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)  # tasks share a GPU
        except RuntimeError:
            pass
    return tf
