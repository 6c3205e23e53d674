"""compare.md of two runs (`python -m runner.compare RUN_A RUN_B`), from comparison.compare's numbers.

Classes and samples by the dataset's names where the figures found them (class_names, sample_names),
else by number; rows measured on the same samples by something else (a human baseline) come in as
result["beside"] lines.
"""

from __future__ import annotations

from runner.evaluation import results


def report(result: dict) -> str:
    """compare.md."""
    a, b, best_a, best_b = result["a"], result["b"], result["best_a"], result["best_b"]
    metric = best_a["metric"]
    lines = [f"# {b.name} (B) against {a.name} (A)", "", f"- A: `{a}`", f"- B: `{b}`", "", "## What differs", ""]
    changed = result["config"]
    if result.get("ensembles"):  # an ensemble has members, not a config of its own
        lines += [f"- {who}: {described}" for who, described in result["ensembles"].items()]
    else:
        if len(changed) > 1:
            lines += [f"**{len(changed)} settings changed: change one thing at a time**, or the difference below "
                      "cannot be put down to any one of them.", ""]
        lines += ["| setting | A | B |", "| --- | --- | --- |", *(f"| {k} | {va} | {vb} |" for k, va, vb in changed)]
    lines += ["", *(f"- {k}: {va} -> {vb}" for k, va, vb in result["other"])]
    mc, boot = result["mcnemar"], result["bootstrap"]

    def interval(best):
        ci = best["metrics"].get("top1_ci95") or []
        ci = ci if len(ci) == 2 else [float("nan")] * 2
        return f"{best['value']:.4f} (top-1 95% interval [{ci[0]:.4f}, {ci[1]:.4f}])"
    verdict = "B is better" if boot["ci95"][0] > 0 else "A is better" if boot["ci95"][1] < 0 else \
        "no difference shown"
    def at(best):  # the weights where they are averaged ones: "checkpoints/epoch-0003.pt (ema)"
        weights = results.weights_of(best)
        return best["checkpoint"] + ("" if weights == "raw" else f" ({weights})")
    lines += ["", f"## Best validation {metric}", "", f"- A: {interval(best_a)} at {at(best_a)}",
              f"- B: {interval(best_b)} at {at(best_b)}", "",
              f"## Paired, on the same {best_a['metrics'].get('n', '?')} {best_a['split']} samples", "",
              f"- only A right: {mc['only_a_right']}, only B right: {mc['only_b_right']}; exact McNemar p = "
              f"{mc['p_value']:.4g}",
              f"- top-1 of B minus A: {boot['difference']:+.4f}, paired bootstrap 95% interval "
              f"[{boot['ci95'][0]:+.4f}, {boot['ci95'][1]:+.4f}] ({boot['resamples']} resamples): **{verdict}**",
              *result.get("beside", []),  # rows measured on the same samples (a human baseline), as "- ..." lines
              "", "## Classes that changed most", "", "| class | samples | A | B | change |",
              "| --- | --- | --- | --- | --- |",
              *(f"| {class_name(result, r['class'])} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | {r['delta']:+.3f} |"
                for r in result["classes"][:15]),
              "", f"Samples only A gets right: {samples(result, result['only_a'][:50])}",
              f"Samples only B gets right: {samples(result, result['only_b'][:50])}", "", "![curves](curves.png)", "",
              "![disagreements](disagreements.png)" if result.get("gallery") else "", ""]
    return "\n".join(lines)


def class_name(result: dict, number: str) -> str:
    """A class by the dataset's name for it where known (disagreements_png reads them), else its number."""
    names = result.get("class_names") or []
    return names[int(number)] if number.isdigit() and int(number) < len(names) else number


def samples(result: dict, indices: list[int]) -> str:
    """Samples by file name where the dataset reads files (disagreements_png reads them), else by index."""
    names = result.get("sample_names")
    return ", ".join(names[i] for i in indices) if names and not names[0].startswith("#") else str(indices)
