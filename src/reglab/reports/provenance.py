"""The setup and provenance section: dataset and its identity, design, machine, software, code version, times and
commands, read from the runs' summary.json and config.yaml (and study.json)."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np

from ..rundir import Provenance, Run
from ..text import visible
from .analysis import Analysis
from .common import _num, fmt_duration, fmt_int
from .document import Document, esc
from .facts import Study


def _distinct(items) -> list:
    """Unique items in first-seen order; dicts and lists compare by content; None dropped."""
    seen = {}
    for i in items:
        if i is None:
            continue
        seen.setdefault(json.dumps(i, sort_keys=True, default=str), i)
    return list(seen.values())


def _prov(r: Run) -> Provenance:
    return r.summary.provenance


def _software(r: Run) -> dict:
    return _prov(r).software


def _device(r: Run) -> str:
    p, s = _prov(r), r.summary
    kind = str(p.device or s.device or "?")
    name = str(p.device_name or s.device_name or "?")
    return name if name.lower().startswith(kind.lower()) else f"{kind}: {name}"


def _git(r: Run) -> str:
    g = _prov(r).git
    if not isinstance(g, dict) or not g.get("commit"):
        return "not a git checkout (or not recorded)"
    return f"{str(g['commit'])[:12]}{' (dirty: uncommitted changes)' if g.get('dirty') else ' (clean)'}"


def _listing(values: list, fmt=lambda x: esc(x)) -> str:
    return "; ".join(fmt(v) for v in values) if values else "not recorded"


def setup_section(doc: Document, study: Study, an: Analysis) -> None:
    """Dataset and its identity, design, machine, software, code version, times and commands: everything a
    reader needs to trust or repeat the runs the report describes, read from their summary.json (and study.json)."""
    runs = [r for v in study.shown.values() for r in v.described]
    meta = study.meta
    doc.h(1, "Setup and provenance")
    first = runs[0].summary.dataset
    names = first.class_names or first.classes
    wnids = first.classes
    if len(wnids) == len(names):
        classes = ", ".join(f"{esc(n)} ({esc(w)})" if w and w != n else esc(n) for n, w in zip(names, wnids))
    else:
        classes = ", ".join(esc(n) for n in names)
    items = [f"**Dataset:** {esc(first.name)} ({esc(first.path or 'path unknown')})"]
    datasets = _distinct(r.summary.dataset.name for r in runs)
    if len(datasets) > 1:
        items.append(f"**Datasets differ between runs:** {_listing(datasets)}")
    sel = _distinct(r.summary.dataset.selection_size for r in runs)
    items.append(f"**Split sizes:** {fmt_int(first.train_size)} training images"
                 + (f" (of which {' or '.join(fmt_int(s) for s in sel)} held out as the selection split)"
                    if any(sel) else "") + f", {fmt_int(first.val_size)} validation images")
    items.append(f"**Classes ({len(names)}):** {classes or 'unknown'}")
    fps = _distinct(r.summary.dataset.fingerprint for r in runs)
    items.append("**Data identity (fingerprint of the file list: relative path, size, modification time):** "
                 + (_listing(fps, lambda x: f"`{visible(x)}`" if re.fullmatch(r"[0-9a-f]+", str(x)) else esc(x))
                    if fps else "not recorded (an older run)"))
    skipped = len(first.skipped)
    if skipped:
        items.append(f"**Skipped images:** {skipped} undecodable file(s) left out (`--on-bad-image skip`)")
    designs = Counter(r.summary.chosen_on for r in runs)
    items.append("**Chosen on:** " + "; ".join(f"{esc(d)} ({n} run{'s' if n > 1 else ''})" for d, n in designs.items()))
    items.append("**Device:** " + "; ".join(f"{esc(d)} ({n} run{'s' if n > 1 else ''})"
                                            for d, n in Counter(_device(r) for r in runs).items()))
    precision = Counter(str(r.summary.precision or _prov(r).precision or "not recorded") for r in runs)
    items.append("**Precision:** " + "; ".join(f"{esc(p)} ({n} run{'s' if n > 1 else ''})"
                                               for p, n in precision.items()))
    cpus = _distinct((_prov(r).cpu, _prov(r).cpu_count, _prov(r).cpu_native_bf16) for r in runs if _prov(r).cpu)
    items.append("**CPU:** " + (_listing(cpus, lambda c: f"{esc(c[0])}, {c[1]} logical cores, native bf16: "
                                                         f"{'yes' if c[2] else 'no'}") if cpus else "not recorded"))
    gpus = _distinct(_prov(r).gpu for r in runs)
    items.append(f"**GPU:** {_listing(gpus) if gpus else 'none used'}")
    cuda = _distinct(_prov(r).cuda for r in runs)
    items.append(f"**CUDA:** {_listing(cuda) if cuda else 'none (a CPU build of torch, or not recorded)'}")
    for sw in _distinct(_software(r) for r in runs) or [{}]:
        items.append("**Software:** " + (", ".join(f"{esc(k)} {esc(v)}" for k, v in sw.items()) or "not recorded"))
    items.append(f"**reglab source:** {_listing(_distinct(_git(r) for r in runs))}")
    hosts = _distinct(_prov(r).host for r in runs)
    platforms = _distinct(_prov(r).platform for r in runs)
    items.append(f"**Host:** {_listing(hosts)}" + (f" ({_listing(platforms)})" if platforms else ""))
    started = sorted(_prov(r).started for r in runs if _prov(r).started)
    ended = sorted(_prov(r).ended for r in runs if _prov(r).ended)
    items.append(f"**Time (UTC):** started {esc(started[0]) if started else 'not recorded'}, ended "
                 f"{esc(ended[-1]) if ended else 'not recorded'}")
    commands = _distinct([meta.get("command")] + [_prov(r).command for r in runs])
    items.append("**Command:** " + ("; ".join(f"`{c}`" if "`" not in str(c) and visible(c) == str(c) else esc(c)
                                              for c in commands[:3])
                                    + (f" and {len(commands) - 3} more" if len(commands) > 3 else "")
                                    if commands else "not recorded"))
    done = sum(r.status == "finished" for r in runs)
    items.append(f"**Seeds:** {', '.join(str(s) for s in sorted({r.seed for r in runs}))} ("
                 + (f"{done} finished run{'s' if done > 1 else ''})" if done == len(runs) else
                    f"{len(runs)} run{'s' if len(runs) > 1 else ''}, {done} finished)"))
    sizes = _distinct(r.config.get("image_size") for r in runs)
    items.append(f"**Image size:** {', '.join(f'{s}×{s}' for s in sizes) or 'not recorded'}")
    run_total = float(np.nansum([_num(r.summary.wall_seconds) for r in runs]))
    if isinstance(meta.get("wall_seconds"), (int, float)):
        items.append(f"**Total wall time:** {fmt_duration(meta['wall_seconds'])} "
                     f"(sum of the runs' own wall times: {fmt_duration(run_total)})")
    else:
        items.append(f"**Total wall time:** {fmt_duration(run_total)} (sum of the runs' wall times"
                     + ("; no study.json)" if len(runs) > 1 else ")"))
    doc.bullets(items)
    counts = (first.identity or {}).get("counts") or {}
    if counts and isinstance(counts, dict):
        splits = [s for s in counts if isinstance(counts[s], dict)]
        cls = list(dict.fromkeys(c for s in splits for c in counts[s]))
        doc.table(["Class folder"] + [esc(s) for s in splits],
                  [[esc(c)] + [fmt_int(counts[s].get(c)) for s in splits] for c in cls]
                  + [["**all**"] + [fmt_int(sum(v for v in counts[s].values() if isinstance(v, int))) for s in splits]],
                  id="data-identity", note="Images per class folder and split, as recorded in the data identity.")
