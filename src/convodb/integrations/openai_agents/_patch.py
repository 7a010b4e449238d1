"""The difference between two JSON values, small enough to keep in a message's metadata.

An SDK item is stored as parts and tool calls, from which a canonical item is rebuilt on the
way back; the patch holds only where the item differs from that canonical form (an ``id``, a
``status``, a key present as ``null`` or absent, ``logprobs``), so large values (text, images,
encrypted content) stay in the parts and are not copied into the metadata.

A patch is ``None`` (no difference) or one object:

- ``{"=": value}``: the value itself;
- ``{"{": {key: patch, ...}, "-": [key, ...]}``: an object's changed or added keys, and the
  keys it lacks (``"-"`` only when some are missing);
- ``{"[": {"index": patch, ...}}``: a list of the same length, its changed elements;
- ``{"~": head, "n": k}``: a long string that ends like the canonical one: ``head`` followed
  by the canonical string's last ``k`` characters (a ``data:`` URL whose media type was
  written in capitals, say).

Values compare as JSON does: ``1``, ``1.0`` and ``true`` differ. :func:`apply` checks the
patch as it goes (the metadata it comes from may have been written by anyone who can write
the message), and raises :class:`PatchError` rather than a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PatchError", "apply", "diff"]

_LONG = 64  # strings shorter than this are replaced whole


class PatchError(ValueError):
    """A patch that is not one, or not of the value it is applied to."""


def same(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as JSON (a bool is no number, an int no float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def diff(base: Any, target: Any) -> dict[str, Any] | None:
    """The patch that turns ``base`` into ``target``; ``None`` when they are equal."""
    if same(base, target):
        return None
    if isinstance(base, dict) and isinstance(target, dict):
        edits: dict[str, Any] = {}
        for key, value in target.items():
            if key in base:
                change = diff(base[key], value)
                if change is not None:
                    edits[key] = change
            else:
                edits[key] = {"=": value}
        patch: dict[str, Any] = {"{": edits}
        missing = [key for key in base if key not in target]
        if missing:
            patch["-"] = missing
        return patch
    if isinstance(base, list) and isinstance(target, list) and len(base) == len(target):
        changes = {str(i): diff(x, y) for i, (x, y) in enumerate(zip(base, target, strict=True))}
        return {"[": {i: change for i, change in changes.items() if change is not None}}
    if isinstance(base, str) and isinstance(target, str) and len(target) > _LONG:
        k = _common_suffix(base, target)
        if k > _LONG:
            return {"~": target[: len(target) - k], "n": k}
    return {"=": target}


def apply(base: Any, patch: Any) -> Any:
    """``base`` with ``patch`` applied (new containers where it changes; ``base`` is kept).

    Raises:
        PatchError: ``patch`` is no patch of ``base`` (metadata written by someone else).
    """
    if patch is None:
        return base
    if not isinstance(patch, dict):
        raise PatchError("a patch is an object")
    keys = patch.keys()
    if keys == {"="}:
        return patch["="]
    if "{" in patch and keys <= {"{", "-"}:
        edits, missing = patch["{"], patch.get("-", [])
        if not (isinstance(base, dict) and isinstance(edits, dict) and isinstance(missing, list)):
            raise PatchError("an object's patch")
        if not all(isinstance(key, str) for key in missing):
            raise PatchError("missing keys are strings")
        gone = set(missing)
        out = {key: value for key, value in base.items() if key not in gone}
        for key, change in edits.items():
            if key in base:
                out[key] = apply(base[key], change)
            elif isinstance(change, dict) and change.keys() == {"="}:
                out[key] = change["="]
            else:
                raise PatchError("an added key's patch is its value")
        return out
    if keys == {"["}:
        changes = patch["["]
        if not (isinstance(base, list) and isinstance(changes, dict)):
            raise PatchError("a list's patch")
        items = list(base)
        for index, change in changes.items():
            if not (index.isascii() and index.isdigit() and int(index) < len(items)):
                raise PatchError("a list's patch changes its elements")
            items[int(index)] = apply(items[int(index)], change)
        return items
    if keys == {"~", "n"}:
        head, k = patch["~"], patch["n"]
        if not (isinstance(base, str) and isinstance(head, str) and type(k) is int):
            raise PatchError("a string's patch")
        if not 0 <= k <= len(base):
            raise PatchError("a string's patch keeps at most its length")
        return head + base[len(base) - k :]
    raise PatchError("unknown patch")


def _common_suffix(a: str, b: str) -> int:
    """The length of the longest common suffix, by bisection on slice comparisons (each done
    in C), not character by character."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            low = mid
        else:
            high = mid - 1
    return low
