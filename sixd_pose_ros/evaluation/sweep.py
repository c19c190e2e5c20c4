"""Model-free held-out tables: accuracy against the number of references and of refinement steps.

The Gen6D paper's Tables 5 and 7 for our model: the same frames evaluated with 8..128 reference
photos per object, and with the selector's pose alone ("w/o Ref.") against +1/2/3 refinement
iterations. Each cell is one `sixd-pose eval --mode model_free` run (its own report folder);
this module only runs them in turn and gathers ADD-0.1d and Prj-5 into one JSON and one table.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from sixd_pose_ros.evaluation.eval_run import EvalOptions, run_eval
from sixd_pose_ros.io import atomic_write_text


def _cell(summary: dict) -> dict:
    mean = summary["mean"]
    return {"add_0.1d": mean["add_0.1d"], "prj_5": mean["prj_5"], "adds_0.1d": mean["adds_0.1d"],
            "add(-s)_0.1d": mean["add(-s)_0.1d"],
            "rot_err_deg_median": mean["rot_err_deg_median"], "n_frames": summary["n_frames"],
            "latency_ms_median": summary["latency_ms"]["median"]}


def run_sweep(dataset: str | Path, out: str | Path, options: EvalOptions,
              refs: Sequence[int] = (8, 16, 32, 64, 128), iterations: Sequence[int] = (0, 1, 2, 3),
              refs_for_iterations: int = 64) -> dict:
    """Run the two sweeps; write ``out/tables.json`` and ``out/tables.md``; return the JSON."""
    out = Path(out)
    options = replace(options, mode="model_free")
    by_refs = {}
    for n in refs:
        summary = run_eval(dataset, out / f"refs{n}", replace(options, refs=int(n), refine_iterations=0),
                           objects_dir=out / "objects")
        by_refs[str(n)] = _cell(summary)
    by_iterations = {}
    for k in iterations:
        summary = run_eval(dataset, out / f"refs{refs_for_iterations}_iter{k}",
                           replace(options, refs=int(refs_for_iterations), refine_iterations=int(k)),
                           objects_dir=out / "objects")
        by_iterations[str(k)] = _cell(summary)
    result = {"dataset": str(dataset), "use_depth": options.use_depth, "references": by_refs,
              "refinement_iterations": {"refs": refs_for_iterations, "cells": by_iterations}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tables.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
    atomic_write_text(out / "tables.md", format_tables(result))
    return result


def format_tables(result: dict) -> str:
    """Two markdown tables (recalls in %)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"# Model-free held-out tables: {result['dataset']} (depth: {result['use_depth']})", "",
             "| references | ADD-0.1d | Prj-5 | ADD-S-0.1d | ADD(-S)-0.1d | rot med (deg) | latency ms |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, c in result["references"].items():
        rot = "-" if c["rot_err_deg_median"] is None else f"{c['rot_err_deg_median']:.1f}"
        lines.append(f"| {n} | {pct(c['add_0.1d'])} | {pct(c['prj_5'])} | {pct(c['adds_0.1d'])} | "
                     f"{pct(c['add(-s)_0.1d'])} | {rot} | {c['latency_ms_median']:.0f} |")
    it = result["refinement_iterations"]
    lines += ["", f"| refinement iterations ({it['refs']} refs) | ADD-0.1d | Prj-5 | ADD-S-0.1d | ADD(-S)-0.1d "
              "| rot med (deg) |", "|---:|---:|---:|---:|---:|---:|"]
    for k, c in it["cells"].items():
        rot = "-" if c["rot_err_deg_median"] is None else f"{c['rot_err_deg_median']:.1f}"
        label = "selector only" if k == "0" else f"+{k}"
        lines.append(f"| {label} | {pct(c['add_0.1d'])} | {pct(c['prj_5'])} | {pct(c['adds_0.1d'])} | "
                     f"{pct(c['add(-s)_0.1d'])} | {rot} |")
    return "\n".join(lines) + "\n"
