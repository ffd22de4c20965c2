"""Where TPE studies persist: an Optuna sqlite storage beside the MLflow store, one study per search spec.

`<mlruns>/optuna.db` holds every study; a study's default name is the strategy, symbol and a hash
of what determines its trials (axes, fixed params, data selection, windows, metric, seed, batch
size, venue and gate settings), so running the same search again finds it. The spec is kept in
the study's user attributes: resuming with a different one is refused, naming the first
difference, instead of mixing two searches in one study.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from grinder.errors import DataError

DB_NAME = "optuna.db"


def storage_url(root: Path) -> str:
    """The sqlite URL of the study storage in the store folder `root` (absolute)."""
    return "sqlite:///" + (Path(root).resolve() / DB_NAME).as_posix()


def study_name(spec: dict) -> str:
    """`<strategy>-<symbol>-<12 hex of sha256 over the spec>`: the same search, the same name."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{spec.get('strategy', 'study')}-{spec.get('symbol', '')}-{digest}"


def open_study(root: Path, name: str, spec: dict, direction: str, resume: bool):
    """The study `name` in `root`'s storage: created if new; with `resume`, the existing one (same spec).

    Without `resume` an existing study that holds trials is refused (its trials would otherwise be
    silently reused); with `resume` a missing study is refused.
    """
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    db = Path(root) / DB_NAME
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(storage_url(root))
        names = {s.study_name: s for s in storage.get_all_studies()}
    except Exception as e:  # sqlalchemy / sqlite errors: not a study storage
        raise DataError(f"cannot open the study storage: {type(e).__name__}: {str(e).splitlines()[0]}",
                        str(db)) from e  # fmt: skip
    old = names.get(name)
    if old is None:
        if resume:
            raise DataError(f"no study {name!r} to resume", str(db))
        study = optuna.create_study(storage=storage, study_name=name, direction=direction)
        study.set_user_attr("spec", json.loads(json.dumps(spec, default=str)))
        return study
    n = len(storage.get_all_trials(old._study_id, deepcopy=False))
    if not resume and n:
        raise DataError(f"study {name!r} already holds {n} trials: pass --resume to continue it, or another --study",
                        str(db))  # fmt: skip
    saved = old.user_attrs.get("spec")
    now = json.loads(json.dumps(spec, default=str))
    if saved is not None and saved != now:
        key = next(k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
        raise DataError(f"study {name!r} was made for another search ({key}: {saved.get(key)!r}, now "
                        f"{now.get(key)!r})", str(db))  # fmt: skip
    return optuna.load_study(study_name=name, storage=storage)
