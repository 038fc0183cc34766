"""Suite-wide fixtures."""
import logging

import pytest


def _handlers() -> dict:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return {lg: list(lg.handlers) for lg in loggers}


@pytest.fixture(autouse=True)
def _restore_log_handlers():
    """Remove the log handlers a test added (``logging.basicConfig`` in a tool's ``main``, detectron2's
    ``setup_logger`` in an in-process ``train_net``): they write to that test's captured streams, which
    are closed afterwards, and would print "--- Logging error ---" tracebacks in later tests."""
    before = _handlers()
    yield
    for lg, handlers in _handlers().items():
        for h in lg.handlers[:]:
            if h not in before.get(lg, []):
                lg.removeHandler(h)
