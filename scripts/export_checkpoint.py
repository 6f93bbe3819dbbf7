#!/usr/bin/env python
"""Shrink a Detectron2 training checkpoint into a shipped reference checkpoint.

Keeps only the model weights (no optimizer, scheduler or iteration) and stores floating
point tensors in half precision; Detectron2's ``DetectionCheckpointer`` loads the result into
a float32 model as it is (``load_state_dict`` casts). Usage::

    python scripts/export_checkpoint.py output/shapes_mask_rcnn_R18_FPN/model_final.pth \
        checkpoints/shapes_mask_rcnn_R18_FPN.pth
"""

import argparse
import os

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint written by train_net.py (model_final.pth)")
    p.add_argument("dst", help="where to write the shipped checkpoint")
    p.add_argument("--fp32", action="store_true", help="keep float32 instead of float16")
    a = p.parse_args()
    ckpt = torch.load(a.src, map_location="cpu", weights_only=False)
    state = ckpt["model"] if "model" in ckpt else ckpt
    out = {k: (v.half() if v.is_floating_point() and not a.fp32 else v) for k, v in state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(a.dst)), exist_ok=True)
    torch.save({"model": out, "__author__": "turbo scripts/export_checkpoint.py"}, a.dst)
    print(f"{a.dst}: {len(out)} tensors, {os.path.getsize(a.dst) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
