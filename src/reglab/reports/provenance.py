"""The setup and provenance section: dataset and its identity, design, machine, software, code version, times and
commands, read from the runs' summary.json (and study.json)."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np

from .common import fmt_duration, fmt_int
from ..text import visible
from .document import Document, esc
from ..rundir import Provenance
from .facts import RunFacts


def _distinct(items) -> list:
    """Unique items in first-seen order; dicts and lists compare by content; None dropped."""
    seen = {}
    for i in items:
        if i is None:
            continue
        seen.setdefault(json.dumps(i, sort_keys=True, default=str), i)
    return list(seen.values())


def _prov(f: RunFacts) -> Provenance:
    return f.summary.provenance


def _software(f: RunFacts) -> dict:
    return _prov(f).software


def _device(f: RunFacts) -> str:
    p, s = _prov(f), f.summary
    kind = str(p.device or s.device or "?")
    name = str(p.device_name or s.device_name or "?")
    return name if name.lower().startswith(kind.lower()) else f"{kind}: {name}"


def _git(f: RunFacts) -> str:
    g = _prov(f).git
    if not isinstance(g, dict) or not g.get("commit"):
        return "not a git checkout (or not recorded)"
    return f"{str(g['commit'])[:12]}{' (dirty: uncommitted changes)' if g.get('dirty') else ' (clean)'}"


def _listing(values: list, fmt=lambda x: esc(x)) -> str:
    return "; ".join(fmt(v) for v in values) if values else "not recorded"


def setup_section(doc: Document, runs: list[RunFacts], meta: dict | None = None, heading: str = "Setup and provenance",
                  level: int = 1) -> None:
    """Dataset and its identity, design, machine, software, code version, times and commands: everything a
    reader needs to trust or repeat the runs, read from their summary.json (and study.json)."""
    meta = meta or {}
    doc.h(level, heading)
    first = runs[0].summary.dataset
    names = first.class_names or first.classes
    wnids = first.classes
    if len(wnids) == len(names):
        classes = ", ".join(f"{esc(n)} ({esc(w)})" if w and w != n else esc(n) for n, w in zip(names, wnids))
    else:
        classes = ", ".join(esc(n) for n in names)
    items = [f"**Dataset:** {esc(first.name)} ({esc(first.path or 'path unknown')})"]
    datasets = _distinct(f.summary.dataset.name for f in runs)
    if len(datasets) > 1:
        items.append(f"**Datasets differ between runs:** {_listing(datasets)}")
    sel = _distinct(f.summary.dataset.selection_size for f in runs)
    items.append(f"**Split sizes:** {fmt_int(first.train_size)} training images"
                 + (f" (of which {' or '.join(fmt_int(s) for s in sel)} held out as the selection split)"
                    if any(sel) else "") + f", {fmt_int(first.val_size)} validation images")
    items.append(f"**Classes ({len(names)}):** {classes or 'unknown'}")
    fps = _distinct(f.summary.dataset.fingerprint for f in runs)
    items.append("**Data identity (fingerprint of the file list: relative path, size, modification time):** "
                 + (_listing(fps, lambda x: f"`{visible(x)}`" if re.fullmatch(r"[0-9a-f]+", str(x)) else esc(x))
                    if fps else "not recorded (an older run)"))
    skipped = len(first.skipped)
    if skipped:
        items.append(f"**Skipped images:** {skipped} undecodable file(s) left out (`--on-bad-image skip`)")
    designs = Counter(f.chosen_on for f in runs)
    items.append("**Chosen on:** " + "; ".join(f"{esc(d)} ({n} run{'s' if n > 1 else ''})" for d, n in designs.items()))
    items.append("**Device:** " + "; ".join(f"{esc(d)} ({n} run{'s' if n > 1 else ''})"
                                            for d, n in Counter(_device(f) for f in runs).items()))
    precision = Counter(str(f.summary.precision or _prov(f).precision or "not recorded") for f in runs)
    items.append("**Precision:** " + "; ".join(f"{esc(p)} ({n} run{'s' if n > 1 else ''})" for p, n in precision.items()))
    cpus = _distinct((_prov(f).cpu, _prov(f).cpu_count, _prov(f).cpu_native_bf16) for f in runs if _prov(f).cpu)
    items.append("**CPU:** " + (_listing(cpus, lambda c: f"{esc(c[0])}, {c[1]} logical cores, native bf16: "
                                                         f"{'yes' if c[2] else 'no'}") if cpus else "not recorded"))
    gpus = _distinct(_prov(f).gpu for f in runs)
    items.append(f"**GPU:** {_listing(gpus) if gpus else 'none used'}")
    cuda = _distinct(_prov(f).cuda for f in runs)
    items.append(f"**CUDA:** {_listing(cuda) if cuda else 'none (a CPU build of torch, or not recorded)'}")
    for sw in _distinct(_software(f) for f in runs) or [{}]:
        items.append("**Software:** " + (", ".join(f"{esc(k)} {esc(v)}" for k, v in sw.items()) or "not recorded"))
    items.append(f"**reglab source:** {_listing(_distinct(_git(f) for f in runs))}")
    hosts = _distinct(_prov(f).host for f in runs)
    platforms = _distinct(_prov(f).platform for f in runs)
    items.append(f"**Host:** {_listing(hosts)}" + (f" ({_listing(platforms)})" if platforms else ""))
    started = sorted(_prov(f).started for f in runs if _prov(f).started)
    ended = sorted(_prov(f).ended for f in runs if _prov(f).ended)
    items.append(f"**Time (UTC):** started {esc(started[0]) if started else 'not recorded'}, ended "
                 f"{esc(ended[-1]) if ended else 'not recorded'}")
    commands = _distinct([meta.get("command")] + [_prov(f).command for f in runs])
    items.append("**Command:** " + ("; ".join(f"`{c}`" if "`" not in str(c) and visible(c) == str(c) else esc(c)
                                              for c in commands[:3])
                                    + (f" and {len(commands) - 3} more" if len(commands) > 3 else "")
                                    if commands else "not recorded"))
    items.append(f"**Seeds:** {', '.join(str(s) for s in sorted({f.seed for f in runs}))} ({len(runs)} finished "
                 f"run{'s' if len(runs) > 1 else ''})")
    sizes = _distinct(f.run.config.get("image_size") for f in runs)
    items.append(f"**Image size:** {', '.join(f'{s}×{s}' for s in sizes) or 'not recorded'}")
    run_total = float(np.nansum([f.value("wall_seconds") for f in runs]))
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
