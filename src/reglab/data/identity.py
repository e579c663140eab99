"""What data a run was trained on: class names, per-class counts per split, and a fingerprint of the file list
(relative path, size, modification time). A run records it; resume, a study rerun and a report compare it with
the data as it is now, and refuse (or warn, for a report) with a line saying what changed.
"""

from __future__ import annotations

import hashlib
import os

from .folder import SplitFiles, show


def _digest(entries) -> str:
    h = hashlib.sha256()
    for rel, size, mtime_ns in entries:
        h.update(os.fsencode(rel) + b"\0" + f"{size}:{mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def identity(root, splits: list[SplitFiles]) -> dict:
    """{classes, counts: {split: {class: n}}, digests: {split/class: hex}, fingerprint: hex} for a scanned tree.
    Paths are relative to the root, so the same files elsewhere have the same fingerprint."""
    classes = list(splits[0].classes)
    counts, digests = {}, {}
    for split in splits:
        per_class: dict[int, list] = {i: [] for i in range(len(classes))}
        for f in split.files:
            per_class[f.label].append((os.path.relpath(f.path, root), f.size, f.mtime_ns))
        counts[split.name] = {classes[i]: len(v) for i, v in per_class.items()}
        for i, v in per_class.items():
            digests[f"{split.name}/{classes[i]}"] = _digest(sorted(v))
        if split.unreadable:  # broken links and the like are part of the tree too (skipped by policy)
            digests[f"{split.name}/(unreadable)"] = _digest(sorted((os.path.relpath(p, root), -1, -1)
                                                                   for p, _ in split.unreadable))
    fingerprint = hashlib.sha256(os.fsencode("".join(f"{k}={v};" for k, v in sorted(digests.items())))).hexdigest()[:16]
    return {"classes": classes, "counts": counts, "digests": digests, "fingerprint": fingerprint}


def describe_change(then: dict, now: dict) -> str | None:
    """None when the data is the same; otherwise what changed, in a few words."""
    if not then or then.get("fingerprint") == now.get("fingerprint"):
        return None
    old_c, new_c = list(then.get("classes", [])), list(now.get("classes", []))
    if old_c != new_c:
        gone = [c for c in old_c if c not in new_c]
        added = [c for c in new_c if c not in old_c]
        parts = ([f"removed or renamed {', '.join(map(show, gone[:3]))}"] if gone else []) + \
                ([f"added {', '.join(map(show, added[:3]))}"] if added else [])
        return "the class folders changed (" + ("; ".join(parts) or "their order changed") + \
               "): labels would shift"
    changed = []
    for split, per_class in now.get("counts", {}).items():
        for cls, n in per_class.items():
            before = then.get("counts", {}).get(split, {}).get(cls)
            if before != n:
                changed.append(f"{split}/{show(cls)} had {before} images, now {n}")
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return "files were added or removed (" + "; ".join(changed[:3]) + more + ")"
    edited = [k for k, v in now.get("digests", {}).items() if then.get("digests", {}).get(k) != v]
    return (f"files were replaced, renamed or modified (same counts; different names, sizes or modification "
            f"times in {', '.join(map(show, edited[:3]))}{' and more' if len(edited) > 3 else ''})")
