"""`jax.jit` with LLVM's machine-code optimisation turned down, for tests.

The compiled XLA program is the same (every HLO pass still runs, fast-math stays off); only
LLVM's backend optimisation is skipped, which is most of the compile time of these tiny
programs on a 2-core machine.
"""

import jax

_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def quick_jit(fun, **kwargs):
    return jax.jit(fun, compiler_options=_OPTIONS, **kwargs)
