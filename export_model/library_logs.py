"""Third-party output during an export: errors only by default, every detail at LOG_LEVEL=DEBUG.

onnxruntime's quantiser logs INFO per tensor through the root logger, its optimiser logs each
fusion, transformers and optimum warn through handlers of their own, and torch's tracer raises
Python warnings: dozens of lines before ours, none of which needs an operator when the export
succeeds (the parity gate says when it does not). Routed through the JSON handler, they keep
the log one JSON object per line when asked for.
"""

from __future__ import annotations

import logging

from witple_batch.logs import configure

OURS = "export_model"


def configure_export_logs(level: str) -> None:
    """Our logger at `level`; the root, where every library's records end, at ERROR unless `level` is DEBUG."""
    configure(OURS, "DEBUG" if level == "DEBUG" else "ERROR")
    logging.getLogger(OURS).setLevel(level)
    logging.captureWarnings(True)  # Python warnings become records of the logger "py.warnings"


def route_library_logs() -> None:
    """transformers and optimum print through their own handlers, past the root: send them to it instead."""
    import onnxruntime
    from optimum.utils import logging as optimum_logging
    from transformers.utils import logging as transformers_logging

    for library in (transformers_logging, optimum_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.set_verbosity(logging.NOTSET)  # the root's level decides
    if logging.getLogger().level > logging.DEBUG:
        onnxruntime.set_default_logger_severity(3)  # its C++ side writes to stderr itself: errors only
