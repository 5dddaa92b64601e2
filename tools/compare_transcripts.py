#!/usr/bin/env python3
"""Compares wisp's transcripts (from `wisp eval --save`) token by token with the reference's
(from tools/reference/ref_transcribe.py) and prints every difference.

Usage: compare_transcripts.py REF.json WISP.json [WISP2.json ...] [--json OUT]
"""
import json
import os
import sys


def key(path: str) -> str:
    return os.path.normpath(path).split("eval/", 1)[-1]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_json = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    if out_json in args:
        args.remove(out_json)
    ref = {key(f["file"]): f for f in json.load(open(args[0]))["files"]}
    wisp = {}
    for p in args[1:]:
        for item in json.load(open(p))["items"]:
            wisp[key(item["file"])] = item
    rows, same, by_lang = [], 0, {}
    for k, r in sorted(ref.items()):
        if k not in wisp:
            continue
        w = wisp[k]
        rt = [t for s in r["segments"] for t in s["tokens"]]
        wt = [t for s in w.get("tokens", []) for t in s]
        equal = rt == wt
        same += equal
        lang = r.get("manifest_language", "?")
        tot = by_lang.setdefault(lang, [0, 0])
        tot[0] += equal
        tot[1] += 1
        first = next((i for i, (a, b) in enumerate(zip(rt, wt)) if a != b), min(len(rt), len(wt)))
        rows.append({"file": k, "language": lang, "equal": equal, "ref_tokens": len(rt), "wisp_tokens": len(wt),
                     "first_diff": None if equal else first, "ref_text": r["text"], "wisp_text": w["hypothesis"]})
    for row in rows:
        if not row["equal"]:
            print(f"DIFF {row['file']} ({row['language']}) at token {row['first_diff']} "
                  f"({row['ref_tokens']} vs {row['wisp_tokens']} tokens)\n  ref : {row['ref_text']!r}\n  wisp: {row['wisp_text']!r}")
    for lang, (eq, n) in sorted(by_lang.items()):
        print(f"{lang}: {eq}/{n} identical")
    print(f"total: {same}/{len(rows)} token-identical")
    if out_json:
        json.dump({"identical": same, "files": len(rows), "by_language": by_lang, "rows": rows}, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main()
