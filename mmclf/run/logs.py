"""mmcls's logger, without muting everyone else's."""
import logging


def mmcls_logger(log_level="INFO") -> logging.Logger:
    """mmcls's root logger, with mmclf's own console lines kept visible.

    mmcv's ``get_logger`` raises every console handler of the root logger to ERROR when it
    first sets up a logger (already at ``import mmcv``), so that mmcv/mmcls lines are not
    printed twice; that also silences mmclf's progress lines (step started/done, resuming).
    Instead, the mmcv and mmcls loggers stop propagating to the root, and the root's console
    handlers are lowered back.
    """
    from mmcls.utils import get_root_logger

    logger = get_root_logger(log_level=log_level)
    for name in ("mmcv", "mmcls"):
        logging.getLogger(name).propagate = False
    # mmcv's INFO lines are per-parameter weight-init tables: hundreds of lines before training
    # starts that bury the progress lines. Its warnings still show.
    logging.getLogger("mmcv").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.level == logging.ERROR:
            handler.setLevel(logging.NOTSET)
    return logger
