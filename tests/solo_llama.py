"""llama-cpp-python's own ``Llama``, loaded the way hearth loads a model on this CPU.

Tests re-score answers with ``Llama`` alone in their process. ``Llama`` has no
parameter for llama.cpp's extra CPU buffer types, and a build with the AMX buffer type
crashes on an AMX CPU at the first decode (llama.cpp issue 20824), taking pytest with
it. This loads it with hearth's own ``weight_repack`` rule.
"""

from __future__ import annotations

from typing import Any


def solo_llama(**kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)`` with ``use_extra_bufts`` as hearth would choose."""
    import llama_cpp
    from llama_cpp import llama_cpp as bindings

    from backends.llamacpp.backend import repack_choice

    if repack_choice(None).enabled:
        return llama_cpp.Llama(**kwargs)
    default_params = bindings.llama_model_default_params

    def without_extra_buffer_types() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = without_extra_buffer_types
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        bindings.llama_model_default_params = default_params
