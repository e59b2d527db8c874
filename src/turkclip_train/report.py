"""Plain-text tables of retrieval metrics, for the terminal."""

from __future__ import annotations

DIRECTIONS = (("text_to_image", "text→image"), ("image_to_text", "image→text"))


def format_table(columns: dict[str, dict], primary: str = "turkish") -> str:
    """One row per (language, direction), one block of R@1/R@5/R@10/median rank per column (model).

    `columns` maps a label ("base", "adapter", "before", ...) to metrics as `evaluate` returns them;
    a nested "english" entry in those metrics becomes extra rows.
    """
    langs = [(primary, lambda m: m)]
    if all("english" in m for m in columns.values()):
        langs.append(("english", lambda m: m["english"]))
    head = f"{'':<9}{'':<12}" + "".join(f"| {label:^30}" for label in columns)
    sub = f"{'language':<9}{'direction':<12}" + "| R@1    R@5    R@10   medR   " * len(columns)
    lines = [head, sub, "-" * len(sub)]
    for lang, pick in langs:
        for key, name in DIRECTIONS:
            row = f"{lang:<9}{name:<12}"
            for metrics in columns.values():
                m = pick(metrics)[key]
                row += f"| {m['R@1']:<6.2f} {m['R@5']:<6.2f} {m['R@10']:<6.2f} {m['median_rank']:<6.1f} "
            lines.append(row)
    counts = [f"{pick(next(iter(columns.values())))['n_texts']} {lang}" for lang, pick in langs]
    n_images = next(iter(columns.values()))["n_images"]
    lines.append(f"({n_images} images, {' + '.join(counts)} captions; R@k in %, medR = median rank)")
    return "\n".join(lines)
