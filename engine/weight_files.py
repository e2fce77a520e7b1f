"""Finding a model directory's safetensors files (single or sharded). Imported by both the start-up
preflight (engine.model_config) and the loader (engine.model_loader), so it depends on neither."""

from __future__ import annotations

import glob
import json
import os


class WeightLoadError(RuntimeError):
    pass


def safetensors_files(model_path: str) -> list[str]:
    index = os.path.join(model_path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(model_path, n) for n in names]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise WeightLoadError(f"weight file(s) listed in model.safetensors.index.json are missing: "
                                  f"{', '.join(os.path.basename(m) for m in missing)}")
        return files
    files = sorted(glob.glob(os.path.join(model_path, "*.safetensors")))
    if not files:
        raise WeightLoadError(f"no *.safetensors weight files in {model_path!r} "
                              "(use --load-format dummy for random weights)")
    return files
