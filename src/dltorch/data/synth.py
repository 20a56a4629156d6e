"""The synth stage's work: every synthetic set of params' `synth` section, each drawn by its own generator
(data/regression.py for the course's CSV sets, data/binary.py, data/sequence.py, data/shapes.py, the graphs'
data/node_classification.py). The generators load lazily, so the synth door stays light; and no model's reader
depends on another set's generator."""

from __future__ import annotations

from pathlib import Path

from dltorch.config import SynthConfig


def write_sets(cfg: SynthConfig, out_dir: Path) -> dict[str, str]:
    """Every set: the course's and `blobs` as <out_dir>/<name>.csv, `sequences` and `shapes` as folders
    (data/sequence.py, data/shapes.py), the graphs `sbm` and `karate` as .npz files; returns {name: SHA-256 of the
    file, or of the folder's files}."""
    from dltorch.data import binary, sequence, shapes
    from dltorch.data import node_classification as graphs
    from dltorch.data.regression import GENERATORS, generate, write_set

    digests = {name: write_set(generate(name, cfg), out_dir / f"{name}.csv") for name in GENERATORS}
    digests["blobs"] = binary.write(binary.generate(cfg.blobs), out_dir / "blobs.csv")
    digests["sequences"] = sequence.write(sequence.generate(cfg.sequences), out_dir / "sequences")
    digests["shapes"] = shapes.write(cfg.shapes, out_dir / "shapes")
    digests["sbm"] = graphs.write(graphs.generate_sbm(cfg.sbm), out_dir / "sbm.npz")
    digests["karate"] = graphs.write(graphs.karate(cfg.karate), out_dir / "karate.npz")
    return digests
